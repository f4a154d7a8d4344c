"""`method.*` settings of finetune (its schema: every key with its default). Imports no torch:
the config schemas are registered at every start-up, ``--help`` included."""

from __future__ import annotations

from dataclasses import dataclass

from promptscale.config import MethodConfig


@dataclass
class FinetuneConfig(MethodConfig):
    name: str = "finetune"
    lr: float = 2e-5
