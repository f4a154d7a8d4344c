"""`method.*` settings of prompt_tuning (its schema: every key with its default). Imports no torch:
the config schemas are registered at every start-up, ``--help`` included."""

from __future__ import annotations

from dataclasses import dataclass

from promptscale.config import MethodConfig


@dataclass
class PromptTuningConfig(MethodConfig):
    name: str = "prompt_tuning"
    lr: float = 0.3
    prompt_length: int = 20
    init: str = "random"
    # half-width of the uniform init (Lester et al.: 0.5)
    init_range: float = 0.5
    # True: prompt + LM tuning (the LM trains too, at lm_lr)
    tune_lm: bool = False
    lm_lr: float = 1e-5
    # init=vocab (and class_label's leftover rows) samples from this many most frequent tokens
    init_vocab_top: int = 5000
    # init=text: the string whose token embeddings fill the prompt (repeated or truncated)
    init_text: str = ""
    # init=file: a trained prompt (a prompt_tuning run's weights file or a PEFT prompt-tuning adapter)
    init_file: str = ""
    # init=class_label: the init of the rows past the labels (all rows on a choice task): vocab or random
    init_fallback: str = "vocab"
