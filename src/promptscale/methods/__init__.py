"""Method registry: a method is one package here, ``methods/<name>/`` (``config.py``: its settings
dataclass; ``model.py``: its LightningModule, which names that dataclass as ``schema``), plus
``conf/method/<name>.yaml``, registered by one line in ``METHODS``.

The settings live apart from the module so that registering the config schemas, which every
start-up does (``--help`` and a misspelt key included), imports neither torch nor lightning
(PEFT's ``tuners/<name>/{config,model}.py`` split, for the same reason)."""

from __future__ import annotations

import importlib

from promptscale.errors import ConfigError

# name -> ("module:settings dataclass", "module:LightningModule"), each imported when first used
METHODS = {
    name: (f"promptscale.methods.{name}.config:{schema}", f"promptscale.methods.{name}.model:{module}")
    for name, schema, module in (
        ("finetune", "FinetuneConfig", "Finetune"),
        ("pet", "PETConfig", "PET"),
        ("prompt_tuning", "PromptTuningConfig", "PromptTuning"),
        ("prefix_tuning", "PrefixTuningConfig", "PrefixTuning"),
        ("ptuning", "PTuningConfig", "PTuning"),
        ("ptuning_v2", "PTuningV2Config", "PTuningV2"),
        ("adapter", "AdapterConfig", "Adapter"),
        ("lora", "LoRAConfig", "Lora"),
        ("icl", "ICLConfig", "ICL"),
        ("cot", "CoTConfig", "CoT"),
    )
}


def _load(reference: str):
    module, attr = reference.split(":")
    return getattr(importlib.import_module(module), attr)


def _entry(name: str) -> tuple[str, str]:
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is not one of {', '.join(METHODS)}")
    return METHODS[name]


def method_class(name: str):
    """The method's LightningModule (imports torch and lightning)."""
    return _load(_entry(name)[1])


def method_schema(name: str) -> type:
    """The method's settings dataclass, without importing its module."""
    return _load(_entry(name)[0])


def method_schemas() -> dict[str, type]:
    """name -> the method's settings dataclass, every registered method."""
    return {name: method_schema(name) for name in METHODS}
