"""Per-layer key/value prefixes, shared by Prefix-Tuning and P-Tuning v2.

Handed to the backbone as its key/value cache (a fresh DynamicCache per forward, since the
model appends the step's own keys to it; ``models.cache_argument`` names the argument), with the attention mask widened to cover them: every
token of every layer attends to the p prefix positions. Decoder-only models number their
positions after the prefix (as PEFT does).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from promptscale.errors import ConfigError, check_min


class DeepPrompt(nn.Module):
    """Prefixes of shape [layers, 2 (key, value), kv_heads, p, head_dim].

    ``hidden=0``: the prefixes themselves train (P-Tuning v2's default). ``hidden>0``: Li & Liang's
    reparameterization, p embeddings -> MLP(d -> hidden -> layers*2*kv_heads*head_dim, tanh),
    which :meth:`fold` replaces by its output once training ends.

    ``dropout``: in training, each input row's copy of the prefixes is dropped out (P-Tuning v2's code
    applies the encoder's hidden dropout to its past key/values; Li & Liang's ``prefix_dropout``)."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        length: int,
        d_model: int,
        hidden: int,
        generator: torch.Generator,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.layers, self.kv_heads, self.head_dim = shape
        self.length = length
        width = self.layers * 2 * self.kv_heads * self.head_dim
        if hidden:
            self.embedding = nn.Parameter(torch.randn(length, d_model, generator=generator))
            self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.Tanh(), nn.Linear(hidden, width))
            self.prefix = None
        else:
            self.prefix = nn.Parameter(torch.randn(length, width, generator=generator))

    def table(self) -> torch.Tensor:
        flat = self.prefix if self.prefix is not None else self.mlp(self.embedding)
        return flat.view(self.length, self.layers, 2, self.kv_heads, self.head_dim).permute(1, 2, 3, 0, 4)

    @torch.no_grad()
    def fold(self) -> None:
        """Drop the reparameterization: keep only the prefixes it produces."""
        if self.prefix is None:
            flat = self.mlp(self.embedding)
            del self.embedding, self.mlp
            self.prefix = nn.Parameter(flat.detach().clone())

    def cache(self, batch_size: int, dtype: torch.dtype) -> DynamicCache:
        cache = DynamicCache()
        for layer, (keys, values) in enumerate(self.table().to(dtype)):
            expand = (batch_size, -1, -1, -1)
            keys, values = keys.unsqueeze(0).expand(*expand), values.unsqueeze(0).expand(*expand)
            if self.dropout.p and self.training:  # a mask per row (an example, or a candidate's own row)
                keys, values = self.dropout(keys), self.dropout(values)
            cache.update(keys, values, layer)
        return cache


def check_prefix_length(cfg) -> None:
    check_min(cfg.method, "prompt_length", 1)
    check_min(cfg.method, "reparam_hidden", 0)
    if not 0 <= cfg.method.prefix_dropout < 1:
        raise ConfigError(f"method.prefix_dropout must be in [0, 1), got {cfg.method.prefix_dropout}")
