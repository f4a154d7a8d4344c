"""Prefix-Tuning (Li & Liang 2021): trainable key/value prefixes at every attention layer, trained
through an MLP reparameterization (``reparam_hidden``) that is folded away when training ends,
so the saved checkpoint holds only the final prefixes. The backbone is frozen; classification
reads the LM head as the other methods do (verbalizer scoring).

Encoder-decoders get prefixes on the encoder *and* the decoder (PEFT covers only T5's decoder):
the decoder takes its prefixes as a self-attention cache; T5's encoder takes no cache, so a
forward pre-hook hands each encoder self-attention layer its prefixes as ``past_key_values``
(T5Attention then prepends them to its keys/values and offsets its relative positions)."""

from __future__ import annotations

import torch

from promptscale.methods.deep_prompt import DeepPrompt
from promptscale.methods.ptuning_v2 import PTuningV2


class PrefixTuning(PTuningV2):
    @classmethod
    def unsupported(cls, cfg) -> str | None:
        return super(PTuningV2, cls).unsupported(cfg)

    def setup_method(self) -> None:
        super().setup_method()
        if self.backbone.family != "encdec":
            return
        generator = torch.Generator().manual_seed(self.cfg.seed + 1)
        self.decoder_prompt = DeepPrompt(
            self.backbone.kv_shape(decoder=True), self.hp.prompt_length, self.backbone.hidden_size, self.hp.reparam_hidden, generator
        )
        self._encoder_cache = None
        for block in self.backbone.model.get_encoder().block:
            block.layer[0].SelfAttention.register_forward_pre_hook(self._give_encoder_prefixes, with_kwargs=True)

    def _give_encoder_prefixes(self, attention, args, kwargs):
        if self._encoder_cache is not None:
            kwargs["past_key_values"] = self._encoder_cache
        return args, kwargs

    def encode(self, embeds, mask):
        self._encoder_cache = self.deep_prompt.cache(embeds.shape[0], embeds.dtype)
        try:
            wide = torch.cat([mask.new_ones(mask.shape[0], self.hp.prompt_length), mask], dim=1)
            return self.backbone.encoder_hidden_states(embeds, wide)
        finally:
            self._encoder_cache = None

    def decode(self, encoded, mask, decoder_input_ids, decoder_mask):
        cache = self.decoder_prompt.cache(decoder_input_ids.shape[0], encoded.dtype)
        wide = torch.cat([decoder_mask.new_ones(decoder_mask.shape[0], self.hp.prompt_length), decoder_mask], dim=1)
        return self.backbone.seq2seq_logits(encoded, mask, decoder_input_ids, wide, past_key_values=cache)

    def on_fit_end(self) -> None:
        super().on_fit_end()
        if self.backbone.family == "encdec":
            self.decoder_prompt.fold()
