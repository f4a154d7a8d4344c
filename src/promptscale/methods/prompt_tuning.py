"""Prompt Tuning (Lester et al. 2021): ``prompt_length`` trainable embeddings prepended to the
input embeddings; the backbone is frozen, so only p x d_model weights (plus a task head where
the task needs one: sequence labeling, or method.head=cls) train.

Our own module rather than PEFT's: our heads need the number of virtual tokens to shift the
[MASK], slot and label positions, and Lester's inits (sampled vocab, class labels) are not in
PEFT. Inits are registered in ``PROMPT_INITS`` by name (``method.init``)."""

from __future__ import annotations

import torch
from torch import nn

from promptscale.errors import ConfigError
from promptscale.methods.base import AdaptationModule


def init_random(module: "PromptTuning", generator: torch.Generator) -> torch.Tensor:
    """Uniform in [-init_range, init_range] (Lester et al.: 0.5)."""
    r = module.hp.init_range
    shape = (module.hp.prompt_length, module.backbone.hidden_size)
    return torch.rand(shape, generator=generator) * 2 * r - r


PROMPT_INITS = {"random": init_random}


class PromptTuning(AdaptationModule):
    @classmethod
    def check_supported(cls, cfg) -> None:
        super().check_supported(cfg)
        if cfg.method.prompt_length < 1:
            raise ConfigError(f"method.prompt_length must be >= 1, got {cfg.method.prompt_length}")
        if cfg.method.init not in PROMPT_INITS:
            raise ConfigError(f"method.init={cfg.method.init!r} is not one of {', '.join(PROMPT_INITS)}")

    def setup_method(self) -> None:
        self.backbone.requires_grad_(False)
        generator = torch.Generator().manual_seed(self.cfg.seed)
        self.prompt = nn.Parameter(PROMPT_INITS[self.hp.init](self, generator))

    def virtual_tokens(self, batch_size: int) -> torch.Tensor:
        return self.prompt.unsqueeze(0).expand(batch_size, -1, -1)
