"""P-Tuning v2 (Liu et al. 2022): deep prompts (key/value prefixes) at every layer, the backbone
frozen, a linear task head trained with them: on [CLS] (encoders) or the last token
(decoder-only) for classification, per token for sequence labeling (the paper's CoNLL-2003
setting). Reparameterization is off by default (``reparam_hidden > 0`` turns it on)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from promptscale.config import MethodConfig
from promptscale.families import family
from promptscale.methods.base import AdaptationModule
from promptscale.methods.deep_prompt import DeepPrompt, check_prefix_length


@dataclass
class PTuningV2Config(MethodConfig):
    name: str = "ptuning_v2"
    lr: float = 1e-2
    head: str = "cls"
    prompt_length: int = 16
    # 0: the prefixes train directly (P-Tuning v2's default); > 0: MLP reparameterization of this width
    reparam_hidden: int = 0
    # dropout on the prefixes in training (P-Tuning v2's code: the encoder's hidden dropout, 0.1 for BERT)
    prefix_dropout: float = 0.0


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
