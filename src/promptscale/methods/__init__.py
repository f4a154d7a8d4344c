"""Method registry: a method is one module here plus ``conf/method/<name>.yaml``."""

from __future__ import annotations

import importlib

from promptscale.errors import ConfigError

METHODS = {
    "finetune": "promptscale.methods.finetune:Finetune",
    "prompt_tuning": "promptscale.methods.prompt_tuning:PromptTuning",
    "ptuning": "promptscale.methods.ptuning:PTuning",
    "ptuning_v2": "promptscale.methods.ptuning_v2:PTuningV2",
    "prefix_tuning": "promptscale.methods.prefix_tuning:PrefixTuning",
    "icl": "promptscale.methods.icl:ICL",
    "cot": "promptscale.methods.cot:CoT",
    "pet": "promptscale.methods.pet:PET",
    "adapter": "promptscale.methods.adapter:Adapter",
    "lora": "promptscale.methods.lora:Lora",
}


def method_class(name: str):
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is not one of {', '.join(METHODS)}")
    module, attr = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attr)
