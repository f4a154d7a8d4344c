"""Structured configs: every YAML group is checked against one of these dataclasses (a method's own
settings: its ``schema`` dataclass in ``methods/<name>/config.py``, on :class:`MethodConfig`).

A misspelt key or a wrong type fails at start-up with Hydra's message naming the key.
Values that need the task or the model to check (e.g. a method on the wrong family)
are validated in :func:`validate`, still before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, ListConfig, OmegaConf

from promptscale.errors import ConfigError, check_choice, check_min, listing
from promptscale.families import FAMILIES, family

TASK_KINDS = ("classification", "choice", "tagging")
MODEL_SOURCES = ("hub", "tiny", "packaged")
LOGGER_MODES = ("online", "offline", "disabled")
SEED_MAX = 2**32 - 1  # numpy's seeds are unsigned 32-bit


@dataclass
class HubConfig:
    """Where the task lives on the Hugging Face hub (parquet repos; used when data.dir is unset)."""

    path: Optional[str] = None
    name: Optional[str] = None
    splits: dict[str, str] = field(default_factory=dict)


@dataclass
class PatternConfig:
    """A hard prompt: a Jinja template (its own words around the task's fields) and, optionally, its
    own verbalizer, delimiter and choice text (see TaskConfig). Masked-LM patterns may put the answer
    slot inside with [MASK]. ``name`` selects it (method.pattern=<name>) besides its index."""

    template: str = MISSING
    name: Optional[str] = None
    verbalizer: dict[str, Any] = field(default_factory=dict)
    delimiter: Optional[str] = None
    choice: Optional[str] = None


@dataclass
class TaskConfig:
    name: str = MISSING
    kind: str = MISSING
    reader: str = MISSING
    folder: str = MISSING
    files: dict[str, str] = field(default_factory=dict)
    train_split: str = "train"
    eval_split: str = "val"
    labels: list[str] = field(default_factory=list)
    # label -> the word the model should produce for it (multi-token allowed; Jinja over the fields),
    # or a list of words (several label words: the label scores the mean of its words' scores)
    verbalizer: dict[str, Any] = field(default_factory=dict)
    # the prompt, Jinja over the record's fields ({{ premise }}); the answer slot follows the text
    # (decoder continuation, encoder [MASK]s, T5 target)
    template: str = ""
    # Jinja text before each candidate (lm-eval's target_delimiter)
    delimiter: str = " "
    # Jinja text of each candidate: ``choice`` is the verbalizer word or the task's candidate
    # (ReCoRD: the entity followed by the rest of the query)
    choice: str = "{{ choice }}"
    # which of ``patterns`` replaced the template (set from method.pattern; for messages)
    pattern_name: Optional[str] = None
    # fields shortened (in this order) when the prompt is longer than data.max_length
    truncate: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    # hard prompts per model family (encoder: cloze, decoder: ends before the answer, encdec:
    # text-to-text); method.pattern=<i> picks one
    patterns: dict[str, list[PatternConfig]] = field(default_factory=dict)
    reader_options: dict[str, Any] = field(default_factory=dict)
    hub: HubConfig = field(default_factory=HubConfig)


@dataclass
class DataConfig:
    dir: Optional[str] = "${oc.env:PROMPTSCALE_DATA_DIR,null}"
    train_size: Optional[int] = None
    eval_size: Optional[int] = None
    # the first N records of the eval split (lm-eval's --limit); applied before eval_size's seeded sample
    eval_limit: Optional[int] = None
    # seeds the eval_size subsample: every training seed is evaluated on the same examples
    eval_seed: int = 0
    eval_split: Optional[str] = None
    max_length: int = 256
    # which end of a long field truncation cuts: right keeps its start, left keeps its end (lm-eval)
    truncation_side: str = "right"
    batch_size: int = 8
    eval_batch_size: int = 16
    # training batches of similar length (less padding): the seeded order is cut into chunks of
    # 50 batches, each chunk sorted by length and its batches shuffled. Evaluation is always sorted.
    bucket_by_length: bool = False
    num_workers: int = 0
    cache_dir: Optional[str] = None


@dataclass
class ModelConfig:
    name: str = MISSING
    family: str = MISSING
    source: str = "hub"
    # hub id or local folder; for source=packaged, the packaged model's name (models.PACKAGED)
    path: Optional[str] = None
    params: int = 0
    # for source=tiny: transformers config class name, its kwargs, and the tokenizer to build
    arch: Optional[str] = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    tokenizer: Optional[str] = None
    dtype: str = "float32"
    trust_remote_code: bool = False
    # the model's name on the Hugging Face hub, recorded as the base model of PEFT exports
    # (null: a hub model's path); not part of the config hash
    hub_id: Optional[str] = None
    # encoders: false for one without an MLM head (a sentence encoder): head-based methods only
    mlm_head: bool = True


@dataclass
class MethodConfig:
    name: str = MISSING
    lr: float = 1e-4
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    scheduler: str = "linear"
    warmup_steps: int = 0
    # how classification reads the model: lm = score verbalizers with the LM head
    # (cloze at [MASK] / continuation / T5 target); cls = linear head on [CLS] or the last token
    head: str = "lm"
    # candidate score from its token log-probs: sum or mean
    score: str = "sum"
    # index or name of one of the task's patterns for the model's family (null: the task's own template)
    pattern: Any = None


@dataclass
class TrainerConfig:
    """The Lightning Trainer arguments a sweep varies; each is passed to ``lightning.Trainer``."""

    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: Any = "auto"  # a name ("ddp", "fsdp") or a strategy with options: {_target_: ..., ...}
    num_nodes: int = 1
    precision: Any = "32-true"
    max_epochs: Optional[int] = None
    max_steps: int = -1
    limit_train_batches: Optional[float] = None
    limit_val_batches: Optional[float] = None
    val_check_interval: Optional[float] = None
    check_val_every_n_epoch: Optional[int] = 1
    num_sanity_val_steps: int = 0
    log_every_n_steps: int = 10
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    enable_checkpointing: bool = False
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    deterministic: Any = False
    fast_dev_run: Any = False


@dataclass
class LoggerConfig:
    kind: str = "wandb"
    mode: str = "offline"
    project: str = "promptscale"
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    task: TaskConfig = MISSING
    method: MethodConfig = MISSING
    model: ModelConfig = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    # relative paths resolve against the run dir (single run) or the sweep dir (multirun)
    results_file: str = "results.jsonl"
    # skip a run whose config hash already has a finished line in results_file (resumable sweeps)
    skip_finished: bool = True
    experiment: Optional[str] = None
    # save a resume checkpoint (<run dir>/checkpoints/resume-<config hash>.ckpt) every N optimizer
    # steps (0: only on SIGTERM); the same command in the same run dir resumes from it
    checkpoint_every_n_steps: int = 50
    # keep that checkpoint once the run has finished (deleted with the results line written otherwise)
    keep_checkpoint: bool = False
    # per-method settings of an experiment or a sweep across methods, e.g. {finetune: {lr: 1e-5},
    # prompt_tuning: {prompt_length: 100}}: validate() applies the entry of the method in use to
    # `method` (each entry checked against its method's schema) and then empties this field
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # a finished run keeps its trainable weights (<run dir>/weights-<hash>.safetensors); when the whole LM
    # trains (finetune, pet, tune_lm / freeze_lm=false) only with this set
    keep_lm_weights: bool = False


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="task", name="task_schema", node=TaskConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    from promptscale.methods import method_schemas

    for name, schema in method_schemas().items():
        cs.store(group="method", name=f"{name}_schema", node=schema)


def apply_method_overrides(cfg) -> None:
    """Apply ``method_overrides[<method in use>]`` to ``cfg.method``, after checking every entry
    (any method's) against that method's schema; then empty ``method_overrides``, so a second call
    changes nothing and the record holds the method's settings as run."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from promptscale.methods import method_schemas

    schemas = method_schemas()
    overrides = cfg.get("method_overrides") or {}
    for name, values in overrides.items():
        if name not in schemas:
            raise ConfigError(f"method_overrides.{name}: no method {name!r} (one of {', '.join(schemas)})")
        for key, value in (values or {}).items():
            try:
                if key == "name":
                    raise KeyError(key)
                OmegaConf.structured(schemas[name])[key] = value
            except (KeyError, OmegaConfBaseException) as err:
                why = f"{name} has no setting {key!r}" if isinstance(err, KeyError) else str(err).splitlines()[0]
                raise ConfigError(f"method_overrides.{name}.{key}={value}: {why}") from None
    for key, value in (overrides.get(cfg.method.name) or {}).items():
        cfg.method[key] = value
    if overrides:
        cfg.method_overrides = {}


def check_not_overridden(cfg, overrides) -> None:
    """ConfigError when a ``method.<key>=<value>`` given on the command line would be replaced by
    ``method_overrides.<method>.<key>`` (an experiment's per-method setting, applied after the
    command line): the run would silently not be the one asked for. Call before :func:`validate`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    entry = (cfg.get("method_overrides") or {}).get(cfg.method.name) or {}
    given = [
        o for o in OverridesParser.create().parse_overrides(list(overrides)) if o.key_or_group.startswith("method.")
    ]
    for override in given:
        if override.is_delete():
            continue
        key, value = override.key_or_group, override.value()
        name = key.removeprefix("method.")
        if name in entry and entry[name] != value and str(entry[name]) != str(value):
            raise ConfigError(
                f"{key}={value} is replaced by method_overrides.{cfg.method.name}.{name}={entry[name]} "
                f"(the experiment's setting for {cfg.method.name}); give it as "
                f"method_overrides.{cfg.method.name}.{name}={value}"
            )


def validate(cfg) -> None:
    """Checks that need more than one group; raises ConfigError with one line."""
    from promptscale.data.encoding import TRUNCATION_SIDES, TaskTemplates
    from promptscale.methods import method_class

    apply_method_overrides(cfg)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{', '.join(missing)}: no value set (a YAML marks it ??? for you to set)")
    task, model, method, data = cfg.task, cfg.model, cfg.method, cfg.data
    check_choice("task.kind", task.kind, TASK_KINDS)
    check_choice("model.family", model.family, FAMILIES)
    check_choice("model.source", model.source, MODEL_SOURCES)
    if model.source == "packaged":
        from promptscale.models import PACKAGED

        check_choice("model.path", model.path, PACKAGED)
    check_choice("method.head", method.head, ("lm", "cls"))
    check_choice("method.score", method.score, ("sum", "mean"))
    check_choice("method.optimizer", method.optimizer, ("adamw", "adafactor", "sgd"))
    check_choice("method.scheduler", method.scheduler, ("linear", "constant"))
    check_choice("logger.kind", cfg.logger.kind, ("wandb", "csv", "none"))
    check_choice("data.truncation_side", data.truncation_side, TRUNCATION_SIDES)
    for key in ("max_length", "batch_size", "eval_batch_size"):
        check_min(data, key, 1, where="data")
    check_keys(cfg)
    check_choice("logger.mode", cfg.logger.mode, LOGGER_MODES)
    if not 0 <= cfg.seed <= SEED_MAX:
        raise ConfigError(f"seed must be in 0..{SEED_MAX} (numpy's range), got {cfg.seed}")
    check_min(data, "num_workers", 0, where="data")
    check_dtype(model.dtype)
    check_precision(cfg.trainer.precision)
    check_accelerator(cfg.trainer)
    for key in ("train_size", "eval_size", "eval_limit"):
        if data[key] is not None and data[key] < 1:
            raise ConfigError(f"data.{key} must be >= 1 or null, got {data[key]}")
    if method.lr <= 0:
        raise ConfigError(f"method.lr must be > 0, got {method.lr}")
    if cfg.checkpoint_every_n_steps < 0:
        raise ConfigError(
            f"checkpoint_every_n_steps must be >= 0 (0: only on SIGTERM), got {cfg.checkpoint_every_n_steps}"
        )
    if task.kind == "classification":
        missing = [label for label in task.labels if label not in task.verbalizer]
        if not task.labels or missing:
            raise ConfigError(f"task {task.name}: every label needs a verbalizer word, missing {missing}")
    method_class(method.name).check_supported(cfg)
    method_class(method.name).apply_to_task(cfg)
    check_verbalizer(task)
    if task.kind != "tagging":
        TaskTemplates(task)  # a Jinja syntax error is one line naming the task and pattern
    if "[MASK]" in task.template and not family(model.family).cloze:
        raise ConfigError(
            f"task {task.name}: a [MASK] slot inside the template is for masked LMs, not {model.family} models"
        )


def check_verbalizer(task) -> None:
    """Each verbalizer entry is a word (text; a number reads as its text) or a non-empty list of
    words; one line naming the entry."""
    words_of = (str, int, float)  # bool is an int
    for label, value in task.verbalizer.items():
        words = (
            [value] if isinstance(value, words_of) else list(value) if isinstance(value, ListConfig | list) else None
        )
        if not words or not all(isinstance(w, words_of) and str(w).strip() for w in words):
            raise ConfigError(
                f"task {task.name}: verbalizer[{label}]={value!r} must be a word or a list of words (non-empty text)"
            )


def unknown_keys(node, schema, prefix: str = "") -> list[str]:
    """Dotted keys of ``node`` that no field of the dataclass ``schema`` has, nested dataclasses
    included (free-form dicts such as ``task.files`` or ``model.arch_kwargs`` hold any key)."""
    hints = typing.get_type_hints(schema)
    found: list[str] = []
    for key in node:
        if key in hints:
            found += _unknown_in(node[key], hints[key], f"{prefix}{key}")
        else:
            found.append(f"{prefix}{key}")
    return found


def _unknown_in(value, hint, where: str) -> list[str]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union:  # Optional[X]
        return _unknown_in(value, args[0], where)
    if value is None:
        return []
    if dataclasses.is_dataclass(hint):
        return unknown_keys(value, hint, where + ".") if hasattr(value, "keys") else []
    if typing.get_origin(hint) is list and isinstance(value, typing.Sequence | ListConfig):
        return [k for i, v in enumerate(value) for k in _unknown_in(v, args[0], f"{where}[{i}]")]
    if typing.get_origin(hint) is dict and hasattr(value, "keys"):
        return [k for name, v in value.items() for k in _unknown_in(v, args[1], f"{where}.{name}")]
    return []


def check_keys(cfg) -> None:
    """ConfigError for a key no schema has. Hydra refuses ``method.prompt_lenght=5`` itself, but
    ``+method.prompt_lenght=5`` (its own hint for an unknown key) adds it whatever the schema."""
    unknown = [key for key in unknown_keys(cfg, TrainConfig) if not key.startswith("method.")]
    from promptscale.methods import METHODS, method_schema

    if cfg.method.name in METHODS:  # else method_class names the unknown method
        unknown += unknown_keys(cfg.method, method_schema(cfg.method.name), "method.")
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ConfigError(f"unknown config key(s) {shown}: no such setting (misspelt?)")


def check_dtype(name: str) -> None:
    import torch

    if not isinstance(getattr(torch, name, None), torch.dtype):
        raise ConfigError(f"model.dtype={name!r} is not a torch dtype (e.g. float32, bfloat16, float16)")


def check_precision(value) -> None:
    """ConfigError unless Lightning accepts ``value`` as ``trainer.precision``."""
    from lightning.fabric.connector import _PRECISION_INPUT  # Lightning's own list of accepted values

    accepted = [v for alias in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(alias)]
    if value not in accepted:
        names = dict.fromkeys(str(v) for v in accepted)
        raise ConfigError(f"trainer.precision={value!r} is not one of {listing(names, limit=20, quote=False)}")


def check_accelerator(trainer) -> None:
    """ConfigError for a ``trainer.accelerator`` or ``trainer.strategy`` Lightning does not know,
    or an accelerator this machine lacks (Lightning would say so only after the model loads)."""
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    names = ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    check_choice("trainer.accelerator", trainer.accelerator, names)
    entry = AcceleratorRegistry[trainer.accelerator] if trainer.accelerator in AcceleratorRegistry else {}
    gpus = (
        [AcceleratorRegistry[name]["accelerator"] for name in ("cuda", "mps")] if trainer.accelerator == "gpu" else []
    )
    if (
        "accelerator" in entry
        and not entry["accelerator"].is_available()
        or gpus
        and not any(g.is_available() for g in gpus)
    ):
        raise ConfigError(f"trainer.accelerator={trainer.accelerator}: not available on this machine")
    check_choice("trainer.strategy", trainer.strategy, ["auto", *StrategyRegistry.available_strategies()])
