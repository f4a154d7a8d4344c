"""`method.*` settings of ptuning (its schema: every key with its default). Imports no torch:
the config schemas are registered at every start-up, ``--help`` included."""

from __future__ import annotations

from dataclasses import dataclass

from promptscale.config import MethodConfig


@dataclass
class PTuningConfig(MethodConfig):
    name: str = "ptuning"
    lr: float = 1e-3
    # template with [P] virtual tokens among the task's own words; "" = prompt_length [P]s
    # before the task's template
    template: str = ""
    prompt_length: int = 8
    # prompt encoder: lstm (bi-LSTM + MLP, the paper's) or mlp
    encoder: str = "lstm"
    encoder_hidden: int = 0  # 0 = d_model
    # True: only the prompt encoder trains; False: the LM trains too (the few-shot SuperGLUE setting)
    freeze_lm: bool = True
    lm_lr: float = 1e-5
