"""`method.*` settings of ptuning_v2 (its schema: every key with its default). Imports no torch:
the config schemas are registered at every start-up, ``--help`` included."""

from __future__ import annotations

from dataclasses import dataclass

from promptscale.config import MethodConfig


@dataclass
class PTuningV2Config(MethodConfig):
    name: str = "ptuning_v2"
    lr: float = 1e-2
    head: str = "cls"
    prompt_length: int = 16
    # 0: the prefixes train directly (P-Tuning v2's default); > 0: MLP reparameterization of this width
    reparam_hidden: int = 0
    # dropout on the prefixes in training (P-Tuning v2's code: the encoder's hidden dropout, 0.1 for BERT)
    prefix_dropout: float = 0.0
