"""PET hard prompts (Schick & Schütze 2021): one of the task's patterns (``method.pattern``,
``conf/task/<task>.yaml``) with its verbalizer, read by rank classification over the verbalizer
words (or a choice task's candidates). ``tune_lm`` chooses the training strategy: the LM trains
(fixed-prompt LM tuning) or nothing does (tuning-free prompting: the run only evaluates)."""

from __future__ import annotations

from promptscale.errors import ConfigError
from promptscale.methods.base import AdaptationModule
from promptscale.methods.pet.config import PETConfig


class PET(AdaptationModule):
    schema = PETConfig

    @classmethod
    def check_supported(cls, cfg) -> None:
        super().check_supported(cfg)
        if cfg.task.kind == "tagging":
            raise ConfigError(f"method=pet: task {cfg.task.name} is sequence labeling, which has no patterns")
        if cfg.method.pattern is None:
            raise ConfigError(
                "method=pet needs method.pattern=<index or name> (one of the task's patterns for the model's family)"
            )

    @classmethod
    def unsupported(cls, cfg) -> str | None:
        if cfg.task.kind == "tagging":
            return "PET reads hard patterns; sequence labeling has none"
        return super().unsupported(cfg)

    def setup_method(self) -> None:
        self.backbone.requires_grad_(self.hp.tune_lm)
