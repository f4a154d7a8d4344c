"""Prefix-Tuning (Li & Liang 2021): trainable key/value prefixes at every attention layer, trained
through an MLP reparameterization (``reparam_hidden``) that is folded away when training ends,
so the saved checkpoint holds only the final prefixes. The backbone is frozen; classification
reads the LM head as the other methods do (verbalizer scoring).

Encoder-decoders get prefixes on the encoder *and* the decoder (PEFT covers only T5's decoder):
the decoder takes its prefixes as a self-attention cache; T5's encoder stack takes no cache (it
drops one it is given), so a forward pre-hook hands each encoder self-attention layer its prefixes
as that layer's own cache argument (T5Attention then prepends them to its keys/values and offsets
its relative positions). The argument's name is read from the installed T5Attention's signature,
and setup checks on one layer that the prefixes really reach its keys, so a transformers release
that changes the mechanism fails at start-up instead of silently dropping the encoder prefixes."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import DynamicCache

from promptscale.errors import ConfigError, PromptscaleError
from promptscale.methods.deep_prompt import DeepPrompt
from promptscale.methods.prefix_tuning.config import PrefixTuningConfig
from promptscale.methods.ptuning_v2.model import PTuningV2
from promptscale.models import CACHE_ARGUMENTS, cache_argument


class PrefixTuning(PTuningV2):
    schema = PrefixTuningConfig

    @classmethod
    def unsupported(cls, cfg) -> str | None:
        return super(PTuningV2, cls).unsupported(cfg)

    def setup_method(self) -> None:
        super().setup_method()
        if not self.backbone.family.seq2seq:  # T5's decoder gets prefixes of its own
            return
        generator = torch.Generator().manual_seed(self.cfg.seed + 1)
        self.decoder_prompt = DeepPrompt(
            self.backbone.kv_shape(decoder=True),
            self.hp.prompt_length,
            self.backbone.hidden_size,
            self.hp.reparam_hidden,
            generator,
            self.hp.prefix_dropout,
        )
        self._encoder_cache = None
        attentions = [block.layer[0].SelfAttention for block in self.backbone.model.get_encoder().block]
        self._encoder_cache_argument = cache_argument(attentions[0])
        for attention in attentions:
            attention.register_forward_pre_hook(self._give_encoder_prefixes, with_kwargs=True)
        self._check_encoder_takes_prefixes(attentions[0])

    def _give_encoder_prefixes(self, attention, args, kwargs):
        if self._encoder_cache is not None:
            for name in CACHE_ARGUMENTS:  # the stack passes its own (None) cache: ours replaces it
                kwargs.pop(name, None)
            kwargs[self._encoder_cache_argument] = self._encoder_cache
        return args, kwargs

    @torch.no_grad()
    def _check_encoder_takes_prefixes(self, attention) -> None:
        """One hooked encoder self-attention layer, given a 1-position prefix, must extend the
        cache with its own 2 keys (it read it); otherwise stop here with the reason."""
        like = dict(dtype=attention.q.weight.dtype, device=attention.q.weight.device)
        cache = DynamicCache()
        shape = (1, attention.n_heads, 1, attention.key_value_proj_dim)
        cache.update(torch.zeros(shape, **like), torch.zeros(shape, **like), attention.layer_idx)
        self._encoder_cache = cache
        try:
            attention(torch.zeros(1, 2, attention.d_model, **like))
        finally:
            self._encoder_cache = None
        if cache.get_seq_length(attention.layer_idx) != 3:
            raise PromptscaleError(
                f"{type(attention).__name__} of this transformers version ignores the key/value cache given as "
                f"{self._encoder_cache_argument!r}: prefix tuning can't give the T5 encoder its prefixes"
            )

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
        return self.backbone.seq2seq_logits(encoded, mask, decoder_input_ids, wide, cache=cache)

    def on_fit_end(self) -> None:
        super().on_fit_end()
        if self.backbone.family.seq2seq:
            self.decoder_prompt.fold()

    def save_peft(self, folder: Path) -> None:
        """Write the (folded) prefixes in PEFT's prefix-tuning format for decoder-only models:
        our [p, layers x 2 x heads x head_dim] table is laid out as PEFT's ``prompt_embeddings``."""
        from peft import PrefixTuningConfig, TaskType
        from safetensors.torch import save_file

        layers, kv_heads, head_dim = self.backbone.kv_shape()
        if not self.backbone.family.peft_export or kv_heads != self.backbone.model.config.num_attention_heads:
            raise ConfigError("the PEFT export of prefixes is for decoder-only models without grouped key/value heads")
        self.deep_prompt.fold()
        config = PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=self.hp.prompt_length,
            num_layers=layers,
            token_dim=kv_heads * head_dim,
            num_attention_heads=kv_heads,
            prefix_projection=False,
            base_model_name_or_path=self.base_model_id(),
        )
        Path(folder).mkdir(parents=True, exist_ok=True)
        config.save_pretrained(folder)
        prefix = self.deep_prompt.prefix.detach().contiguous()
        save_file({"prompt_embeddings": prefix}, Path(folder) / "adapter_model.safetensors")
