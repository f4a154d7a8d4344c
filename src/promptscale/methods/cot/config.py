"""`method.*` settings of cot (its schema: every key with its default). Imports no torch:
the config schemas are registered at every start-up, ``--help`` included."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from promptscale.config import MethodConfig


@dataclass
class CoTConfig(MethodConfig):
    name: str = "cot"
    # 0: zero-shot ("Let's think step by step."); k: the first k demonstrations
    shots: int = 0
    # each {fields: {<template field>: text}, rationale: text, answer: text}
    demonstrations: list[Any] = field(default_factory=list)
    demonstrations_file: str = ""
    max_new_tokens: int = 64
    answer_tokens: int = 8
