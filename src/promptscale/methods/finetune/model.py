"""Full model tuning: every backbone weight (and the task head, if any) trains. The baseline."""

from promptscale.methods.base import AdaptationModule
from promptscale.methods.finetune.config import FinetuneConfig


class Finetune(AdaptationModule):
    schema = FinetuneConfig

    def setup_method(self) -> None:
        self.backbone.requires_grad_(True)
