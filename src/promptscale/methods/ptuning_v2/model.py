"""P-Tuning v2 (Liu et al. 2022): deep prompts (key/value prefixes) at every layer, the backbone
frozen, a linear task head trained with them: on [CLS] (encoders) or the last token
(decoder-only) for classification, per token for sequence labeling (the paper's CoNLL-2003
setting). Reparameterization is off by default (``reparam_hidden > 0`` turns it on)."""

from __future__ import annotations

import torch

from promptscale.families import family
from promptscale.methods.base import AdaptationModule
from promptscale.methods.deep_prompt import DeepPrompt, check_prefix_length
from promptscale.methods.ptuning_v2.config import PTuningV2Config


class PTuningV2(AdaptationModule):
    schema = PTuningV2Config

    @classmethod
    def unsupported(cls, cfg) -> str | None:
        if not family(cfg.model.family).input_heads:
            return "P-Tuning v2 reads a linear head on [CLS] or on token states; encoder-decoders are read text-to-text"
        return super().unsupported(cfg)

    @classmethod
    def check_supported(cls, cfg) -> None:
        super().check_supported(cfg)
        check_prefix_length(cfg)

    def setup_method(self) -> None:
        self.backbone.requires_grad_(False)
        generator = torch.Generator().manual_seed(self.cfg.seed)
        self.deep_prompt = DeepPrompt(
            self.backbone.kv_shape(),
            self.hp.prompt_length,
            self.backbone.hidden_size,
            self.hp.reparam_hidden,
            generator,
            self.hp.prefix_dropout,
        )

    def layer_prefixes(self, batch_size: int):
        return self.deep_prompt.cache(batch_size, self.backbone.model.dtype)

    def on_fit_end(self) -> None:
        self.deep_prompt.fold()

    def on_load_checkpoint(self, checkpoint) -> None:
        """A checkpoint saved after training holds folded prefixes: fold before loading them."""
        if any(key.endswith("prompt.prefix") for key in checkpoint["state_dict"]):
            for prompt in (m for m in self.modules() if isinstance(m, DeepPrompt)):
                prompt.fold()
