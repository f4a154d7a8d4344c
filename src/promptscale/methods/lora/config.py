"""`method.*` settings of lora (its schema: every key with its default). Imports no torch:
the config schemas are registered at every start-up, ``--help`` included."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from promptscale.config import MethodConfig


@dataclass
class LoRAConfig(MethodConfig):
    """Hu et al. 2021 LoRA through PEFT (methods/lora/model.py)."""

    name: str = "lora"
    lr: float = 5e-4
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    # null: the architecture's query and value projections (GPT-2: the fused c_attn)
    target_modules: Optional[list[str]] = None
    # merge B·A into the frozen weights when training ends
    merge: bool = True
