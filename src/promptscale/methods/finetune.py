"""Full model tuning: every backbone weight (and the task head, if any) trains. The baseline."""

from dataclasses import dataclass

from promptscale.config import MethodConfig
from promptscale.methods.base import AdaptationModule


@dataclass
class FinetuneConfig(MethodConfig):
    name: str = "finetune"
    lr: float = 2e-5


class Finetune(AdaptationModule):
    schema = FinetuneConfig

    def setup_method(self) -> None:
        self.backbone.requires_grad_(True)
