"""`method.*` settings of pet (its schema: every key with its default). Imports no torch:
the config schemas are registered at every start-up, ``--help`` included."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptscale.config import MethodConfig


@dataclass
class PETConfig(MethodConfig):
    name: str = "pet"
    lr: float = 1e-5
    pattern: Any = 0
    # True: fixed-prompt LM tuning; False: tuning-free prompting (nothing trains)
    tune_lm: bool = True
