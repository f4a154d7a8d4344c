"""Method registry: a method is one module here (its settings dataclass, ``schema``, beside its
LightningModule) plus ``conf/method/<name>.yaml``, registered by one line in ``METHODS``."""

from __future__ import annotations

import importlib

from promptscale.errors import ConfigError

METHODS = {
    "finetune": "promptscale.methods.finetune:Finetune",
    "pet": "promptscale.methods.pet:PET",
    "prompt_tuning": "promptscale.methods.prompt_tuning:PromptTuning",
    "prefix_tuning": "promptscale.methods.prefix_tuning:PrefixTuning",
    "ptuning": "promptscale.methods.ptuning:PTuning",
    "ptuning_v2": "promptscale.methods.ptuning_v2:PTuningV2",
    "adapter": "promptscale.methods.adapter:Adapter",
    "lora": "promptscale.methods.lora:Lora",
    "icl": "promptscale.methods.icl:ICL",
    "cot": "promptscale.methods.cot:CoT",
}


def method_class(name: str):
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is not one of {', '.join(METHODS)}")
    module, attr = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def method_schemas() -> dict[str, type]:
    """name -> the method's settings dataclass (its class's ``schema``), every registered method."""
    return {name: method_class(name).schema for name in METHODS}
