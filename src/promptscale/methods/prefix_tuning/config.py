"""`method.*` settings of prefix_tuning (its schema: every key with its default). Imports no torch:
the config schemas are registered at every start-up, ``--help`` included."""

from __future__ import annotations

from dataclasses import dataclass

from promptscale.methods.ptuning_v2.config import PTuningV2Config


@dataclass
class PrefixTuningConfig(PTuningV2Config):
    name: str = "prefix_tuning"
    lr: float = 5e-3
    head: str = "lm"
    prompt_length: int = 10
    reparam_hidden: int = 512
