"""Prefix-Tuning (Li & Liang 2021): trainable key/value prefixes at every attention layer, trained
through an MLP reparameterization (``reparam_hidden``) that is folded away when training ends,
so the saved checkpoint holds only the final prefixes. The backbone is frozen; classification
reads the LM head as every other method does (verbalizer scoring).

Encoder-decoders (prefixes on the encoder *and* the decoder) are not built yet: T5's encoder
attention takes no key/value cache, so it needs its own attention hook."""

from __future__ import annotations

from promptscale.methods.deep_prompt import check_prefix_length
from promptscale.methods.ptuning_v2 import PTuningV2


class PrefixTuning(PTuningV2):
    @classmethod
    def unsupported(cls, cfg) -> str | None:
        if cfg.model.family == "encdec":
            return "prefixes on T5's encoder need an attention hook that is not built yet (decoder-only prefixes would be PEFT's gap)"
        return super(PTuningV2, cls).unsupported(cfg)

    @classmethod
    def check_supported(cls, cfg) -> None:
        super().check_supported(cfg)
        check_prefix_length(cfg)
