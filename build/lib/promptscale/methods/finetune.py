"""Full model tuning: every backbone weight (and the task head, if any) trains. The baseline."""

from promptscale.methods.base import AdaptationModule


class Finetune(AdaptationModule):
    def setup_method(self) -> None:
        self.backbone.requires_grad_(True)
