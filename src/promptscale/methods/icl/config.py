"""`method.*` settings of icl (its schema: every key with its default). Imports no torch:
the config schemas are registered at every start-up, ``--help`` included."""

from __future__ import annotations

from dataclasses import dataclass

from promptscale.config import MethodConfig


@dataclass
class ICLConfig(MethodConfig):
    name: str = "icl"
    shots: int = 0
    # random: a seeded sample of the train split; balanced: round-robin over the labels
    selection: str = "random"
    # contextual calibration (Zhao et al. 2021) with a content-free ("N/A") input
    calibrate: bool = False
    # decoder-only: encode the demonstration block once and reuse its key/value cache
    cache_demos: bool = True
