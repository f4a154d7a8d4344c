"""LoRA (Hu et al. 2021) through PEFT: each adapted weight W (d_out x d_in) becomes
``W + (alpha / r) · B A`` with ``A: r x d_in`` (Kaiming-uniform) and ``B: d_out x r`` (zero), so the
untrained model equals the backbone; the backbone is frozen and ``r · (d_in + d_out)`` weights per
adapted matrix train (plus the task head, where the task has one).

PEFT usage: ``peft.get_peft_model`` injects ``lora.Linear`` layers *in place* into
``backbone.model`` (the Hugging Face model object stays the same, so ``backbone.model.base_model``,
``get_input_embeddings`` and ``lm_head``/``cls`` still resolve and the Backbone API is unchanged).
The returned ``PeftModel`` wrapper is kept outside the module tree (no duplicate state-dict keys)
and only used to save: :meth:`Lora.save_peft` writes a folder that
``peft.PeftModel.from_pretrained(fresh_backbone_model, folder)`` loads.

Target modules (``method.target_modules``; null = the architecture's default, Hu et al.'s query
and value projections): BERT/RoBERTa ``query, value``; T5 ``q, v`` (every self- and
cross-attention of encoder and decoder); Llama/Qwen2/Mistral/SmolLM2 ``q_proj, v_proj``; GPT-2
``c_attn``, which is GPT-2's *fused* q/k/v projection (a Conv1D d -> 3d): PEFT cannot adapt q and v
alone there, so on GPT-2 LoRA also adapts k, and each layer's matrix counts r · (d + 3d).

With ``method.merge`` (default) the LoRA product is merged into the frozen weights when training
ends (``merge_adapter``: inference then costs nothing extra, and the final evaluation runs on the
merged model); a later ``fit`` unmerges first. Checkpoints hold the LoRA A/B matrices (and head)
only, which is all a merged or unmerged model needs to be rebuilt.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from promptscale.errors import ConfigError, check_min
from promptscale.methods.base import AdaptationModule
from promptscale.methods.lora.config import LoRAConfig

# model_type -> default target modules (query and value projections); others: PEFT's own table
DEFAULT_TARGETS = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "t5": ["q", "v"],
    "mt5": ["q", "v"],
    "gpt2": ["c_attn"],  # fused q/k/v
    "llama": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
}


def default_targets(model: nn.Module) -> list[str]:
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = DEFAULT_TARGETS.get(model_type) or PEFT_TARGETS.get(model_type)
    if not targets:
        raise ConfigError(
            f"method=lora: no default target modules for model type {model_type!r}; set method.target_modules"
        )
    return list(targets)


def lora_param_count(model: nn.Module) -> int:
    """Closed form over the adapted layers of ``model``: r · (d_in + d_out) per adapted matrix."""
    from peft.tuners.lora import LoraLayer

    total = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for r in module.r.values():
                total += r * (module.in_features + module.out_features)
    return total


class Lora(AdaptationModule):
    schema = LoRAConfig

    @classmethod
    def check_supported(cls, cfg) -> None:
        super().check_supported(cfg)
        hp = cfg.method
        check_min(hp, "r", 1)
        if hp.alpha <= 0:
            raise ConfigError(f"method.alpha must be > 0, got {hp.alpha}")
        if not 0 <= hp.dropout < 1:
            raise ConfigError(f"method.dropout must be in [0, 1), got {hp.dropout}")
        if hp.target_modules is not None and not list(hp.target_modules):
            raise ConfigError("method.target_modules must name at least one module (or be null for the default)")

    def setup_method(self) -> None:
        from peft import LoraConfig, get_peft_model

        hp, model = self.hp, self.backbone.model
        targets = list(hp.target_modules) if hp.target_modules is not None else default_targets(model)
        config = LoraConfig(
            r=hp.r,
            lora_alpha=hp.alpha,
            lora_dropout=hp.dropout,
            target_modules=targets,
            # GPT-2's Conv1D stores W as d_in x d_out
            fan_in_fan_out=getattr(model.config, "model_type", None) == "gpt2",
            bias="none",
        )
        try:
            peft_model = get_peft_model(model, config)
        except ValueError as err:
            raise ConfigError(f"method=lora: target modules {targets} on {type(model).__name__}: {err}") from None
        # keep the wrapper out of the module tree: the LoRA layers already live in backbone.model
        object.__setattr__(self, "_peft", peft_model)
        self.lora_targets = targets

    # ---- merging ---------------------------------------------------------------------------
    @property
    def merged(self) -> bool:
        from peft.tuners.lora import LoraLayer

        return any(m.merged for m in self.backbone.model.modules() if isinstance(m, LoraLayer))

    def merge(self) -> None:
        """Add (alpha / r) · B A into the frozen weights (reversible with :meth:`unmerge`)."""
        if not self.merged:
            self._peft.base_model.merge_adapter()

    def unmerge(self) -> None:
        if self.merged:
            self._peft.base_model.unmerge_adapter()

    def on_fit_start(self) -> None:
        self.unmerge()
        super().on_fit_start()

    def on_fit_end(self) -> None:
        if self.hp.merge:
            self.merge()

    # ---- saving ----------------------------------------------------------------------------
    def save_peft(self, folder: str | Path) -> Path:
        """Write the LoRA weights as a PEFT adapter folder (``adapter_config.json`` and
        ``adapter_model.safetensors``): ``PeftModel.from_pretrained(model, folder)`` on a fresh
        copy of the backbone rebuilds this model. The task head, if any, is not part of it."""
        folder = Path(folder)
        for config in self._peft.peft_config.values():  # the hub id, not the local folder it was loaded from
            config.base_model_name_or_path = self.base_model_id()
        self._peft.save_pretrained(str(folder))
        return folder
