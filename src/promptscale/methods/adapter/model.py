"""Bottleneck adapters (Houlsby et al. 2019; ``placement=pfeiffer``: Pfeiffer et al. 2021).

An adapter maps a sublayer's output h to ``h + W_up f(W_down h + b_down) + b_up`` with
``W_down: d -> m`` (``method.bottleneck``) and ``W_up: m -> d``. ``W_up`` and ``b_up`` start at
zero, so every adapter starts as the identity and the untrained model's outputs equal the
backbone's; ``W_down`` starts small (normal, std ``method.init_std``). The backbone is frozen;
the adapters, the task head (``tag_head``/``cls_head``, where the task has one) and, with
``method.train_layer_norms`` (Houlsby's setting), the normalization layers of the transformer
(``backbone.model.base_model``: every layer's norms, the embedding and final norms; not the norm
inside BERT's MLM head) train.
Per adapter that is ``2·d·m + m + d`` weights.

Attachment: forward hooks on the existing modules (no copied model code). Each hook replaces the
output of the sublayer's last projection, i.e. the sublayer output *before* dropout, the residual
add and (post-LN models) the layer norm, which is where Houlsby put them. The points, found by
module class name and child name (so RoBERTa, Qwen2, Mistral... match like their cousins):

=====================  ====================================  ==========================================
architecture           after attention (houlsby only)        after feed-forward (houlsby and pfeiffer)
=====================  ====================================  ==========================================
BERT / RoBERTa         ``*SelfOutput.dense``                 ``*Output.dense`` (BertOutput, RobertaOutput)
T5 (enc. and dec.)     ``T5Attention.o`` of ``T5LayerSelf-   ``T5LayerFF.DenseReluDense``
                       Attention`` and, in the decoder,
                       ``T5LayerCrossAttention`` (both)
GPT-2                  ``GPT2Attention.c_proj``              ``GPT2MLP.c_proj``
Llama / Qwen2 / ...    ``*Attention.o_proj``                 ``*MLP.down_proj``
=====================  ====================================  ==========================================

T5 and the decoders are pre-LN: the adapted output is ``x + dropout(adapter(sublayer(norm(x))))``;
BERT is post-LN: ``norm(x + dropout(adapter(sublayer(x))))``. A T5 decoder layer has three
sublayers, so it gets three adapters under ``placement=houlsby``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from promptscale.errors import ConfigError, check_choice, check_min
from promptscale.methods.adapter.config import AdapterConfig
from promptscale.methods.base import AdaptationModule

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}
PLACEMENTS = ("houlsby", "pfeiffer")

# (point, regex on the parent module's class name, child attribute whose output is adapted)
HOOK_POINTS = [
    ("attention", r"SelfOutput$", "dense"),  # BERT, RoBERTa: attention output projection
    ("attention", r"^(M?T5|UMT5)Attention$", "o"),  # T5 self- and cross-attention
    ("attention", r"Attention$", "c_proj"),  # GPT-2
    ("attention", r"Attention$", "o_proj"),  # Llama, Qwen2, Mistral, SmolLM2
    ("ffn", r"(?<!Self)Output$", "dense"),  # BERT, RoBERTa: BertOutput.dense (FFN down-projection)
    ("ffn", r"^(M?T5|UMT5)LayerFF$", "DenseReluDense"),  # T5
    ("ffn", r"MLP$", "c_proj"),  # GPT-2
    ("ffn", r"MLP$", "down_proj"),  # Llama, Qwen2, Mistral, SmolLM2
]


def is_norm(module: nn.Module) -> bool:
    """LayerNorm, T5LayerNorm, LlamaRMSNorm, Qwen2RMSNorm, ... (BERT names its instances LayerNorm)."""
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def hook_points(model: nn.Module, placement: str = "houlsby") -> list[tuple[str, str, nn.Module]]:
    """(point, module name, module) of every sublayer output that gets an adapter, in model order."""
    wanted = ("ffn",) if placement == "pfeiffer" else ("attention", "ffn")
    points = []
    for name, module in model.named_modules():
        cls = type(module).__name__
        for point, pattern, child in HOOK_POINTS:
            target = getattr(module, child, None)
            if point in wanted and isinstance(target, nn.Module) and re.search(pattern, cls):
                points.append((point, f"{name}.{child}" if name else child, target))
                break
    return points


class BottleneckAdapter(nn.Module):
    """``h + up(act(down(h)))``, with ``up`` zero-initialised so that it starts as the identity."""

    def __init__(self, d: int, m: int, activation: str = "relu", init_std: float = 1e-2):
        super().__init__()
        self.down = nn.Linear(d, m)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(m, d)
        nn.init.normal_(self.down.weight, std=init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        delta = self.up(self.act(self.down(h.to(self.down.weight.dtype))))
        return h + delta.to(h.dtype)


def _adapt_output(adapter: BottleneckAdapter):
    def hook(module, args, output):
        if isinstance(output, tuple):  # not at the points above, but keep any extra outputs
            return (adapter(output[0]), *output[1:])
        return adapter(output)

    return hook


def adapter_param_count(d: int, m: int) -> int:
    """Closed form per adapter: W_down d·m + b_down m + W_up m·d + b_up d."""
    return 2 * d * m + m + d


class Adapter(AdaptationModule):
    schema = AdapterConfig

    @classmethod
    def check_supported(cls, cfg) -> None:
        super().check_supported(cfg)
        hp = cfg.method
        check_min(hp, "bottleneck", 1)
        check_choice("method.placement", hp.placement, PLACEMENTS)
        check_choice("method.activation", hp.activation, ACTIVATIONS)
        check_min(hp, "init_std", 0)

    def setup_method(self) -> None:
        hp, model = self.hp, self.backbone.model
        model.requires_grad_(False)
        points = hook_points(model, hp.placement)
        if not points:
            raise ConfigError(
                f"method=adapter: no attention/feed-forward output found in {type(model).__name__} "
                f"(known: BERT/RoBERTa, T5, GPT-2, Llama/Qwen2-style)"
            )
        d = self.backbone.hidden_size
        self.adapters = nn.ModuleDict()
        self.adapter_points: dict[str, str] = {}  # hooked module name -> "attention" | "ffn"
        self._hooks = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)  # the adapters' init depends on the run's seed only
            for point, name, module in points:
                adapter = BottleneckAdapter(d, hp.bottleneck, hp.activation, hp.init_std)
                self.adapters[name.replace(".", "__")] = adapter
                self.adapter_points[name] = point
                self._hooks.append(module.register_forward_hook(_adapt_output(adapter)))
        if hp.train_layer_norms:  # the transformer's norms; not those inside the LM head (BERT's MLM head)
            for module in model.base_model.modules():
                if is_norm(module):
                    module.requires_grad_(True)

    def remove_adapters(self) -> None:
        """Detach the hooks (the backbone is then exactly the original model again)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
