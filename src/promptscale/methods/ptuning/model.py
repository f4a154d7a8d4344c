"""P-Tuning v1 (Liu et al. 2021, "GPT Understands, Too"): virtual tokens produced by a prompt
encoder (bi-LSTM + MLP, or an MLP) and placed at the template's [P] positions, among the task's
own anchor words (e.g. ``[P] [P] {{ premise }} [P] Question: {{ hypothesis }} [P] Answer:``), not only
before the input. ``freeze_lm`` chooses prompt-only training or prompt + LM (the paper's
few-shot SuperGLUE setting, with its own ``lm_lr``).

Our own module: PEFT's P-tuning only prepends its virtual tokens."""

from __future__ import annotations

import torch
from torch import nn

from promptscale.data.encoding import VIRTUAL_ID, VIRTUAL_TOKEN
from promptscale.errors import ConfigError, check_choice, check_min
from promptscale.methods.base import AdaptationModule
from promptscale.methods.ptuning.config import PTuningConfig


class PromptEncoder(nn.Module):
    """n trainable input embeddings -> (bi-LSTM ->) MLP -> n virtual token embeddings."""

    def __init__(self, n: int, d: int, hidden: int, kind: str):
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(n, d) * 0.02)
        self.lstm = (
            nn.LSTM(d, hidden // 2, num_layers=2, bidirectional=True, batch_first=True) if kind == "lstm" else None
        )
        self.mlp = nn.Sequential(nn.Linear(hidden if self.lstm else d, hidden), nn.ReLU(), nn.Linear(hidden, d))

    def forward(self) -> torch.Tensor:
        x = self.embedding
        if self.lstm is not None:
            x = self.lstm(x.unsqueeze(0))[0].squeeze(0)
        return self.mlp(x)


class PTuning(AdaptationModule):
    schema = PTuningConfig

    @classmethod
    def unsupported(cls, cfg) -> str | None:
        if cfg.task.kind == "tagging":
            return (
                "P-Tuning places virtual tokens in a task template; sequence labeling has no template (use ptuning_v2)"
            )
        return super().unsupported(cfg)

    @classmethod
    def check_supported(cls, cfg) -> None:
        super().check_supported(cfg)
        hp = cfg.method
        check_choice("method.encoder", hp.encoder, ("lstm", "mlp"))
        if not hp.template:
            check_min(hp, "prompt_length", 1)
        if hp.template and VIRTUAL_TOKEN not in hp.template:
            raise ConfigError(f"method.template has no {VIRTUAL_TOKEN} virtual token: {hp.template!r}")
        if hp.encoder_hidden < 0 or hp.encoder_hidden % 2:
            raise ConfigError(f"method.encoder_hidden must be an even number >= 0, got {hp.encoder_hidden}")

    @classmethod
    def apply_to_task(cls, cfg) -> None:
        """``method.template`` replaces the task's template; otherwise ``prompt_length`` [P]s go before
        the task's template (or pattern), unless it places virtual tokens already: so a second
        call (validate() run twice) leaves the config as the first one did."""
        super().apply_to_task(cfg)
        hp, task = cfg.method, cfg.task
        if hp.template:
            task.template = hp.template
        elif VIRTUAL_TOKEN not in task.template:
            task.template = " ".join([VIRTUAL_TOKEN] * hp.prompt_length) + " " + task.template

    def setup_method(self) -> None:
        self.backbone.requires_grad_(not self.hp.freeze_lm)
        d = self.backbone.hidden_size
        n = self.task.template.count(VIRTUAL_TOKEN)
        with torch.random.fork_rng():
            torch.manual_seed(self.cfg.seed)
            self.prompt_encoder = PromptEncoder(n, d, self.hp.encoder_hidden or d, self.hp.encoder)

    def inputs(self, batch):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        virtual = ids == VIRTUAL_ID
        embeds = self.backbone.embed(ids.masked_fill(virtual, 0))
        tokens = self.prompt_encoder().to(embeds.dtype)
        if not torch.all(virtual.sum(1) == tokens.shape[0]):
            raise RuntimeError("every example must keep all of the template's virtual tokens")
        embeds = embeds.masked_scatter(virtual.unsqueeze(-1), tokens.repeat(ids.shape[0], 1))
        return embeds, mask, 0

    def param_groups(self) -> list[dict]:
        groups = [{"params": list(self.prompt_encoder.parameters())}]
        if not self.hp.freeze_lm:
            groups.append({"params": list(self.backbone.parameters()), "lr": self.hp.lm_lr})
        heads = [p for head in (self.cls_head,) if head is not None for p in head.parameters()]
        if heads:
            groups.append({"params": heads})
        return groups
