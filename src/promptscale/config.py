"""Structured configs: every YAML group is checked against one of these dataclasses.

A misspelt key or a wrong type fails at start-up with Hydra's message naming the key.
Values that need the task or the model to check (e.g. a method on the wrong family)
are validated in :func:`validate`, still before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from promptscale.errors import ConfigError, check_choice, check_min

TASK_KINDS = ("classification", "choice", "tagging")
FAMILIES = ("encoder", "encdec", "decoder")
MODEL_SOURCES = ("hub", "tiny", "packaged")


@dataclass
class HubConfig:
    """Where the task lives on the Hugging Face hub (parquet repos; used when data.dir is unset)."""

    path: Optional[str] = None
    name: Optional[str] = None
    splits: dict[str, str] = field(default_factory=dict)


@dataclass
class PatternConfig:
    """A hard prompt: a template (its own words around the task's fields) and, optionally, its own
    verbalizer. Masked-LM patterns may put the answer slot inside with [MASK]."""

    template: str = MISSING
    verbalizer: dict[str, str] = field(default_factory=dict)


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
    # label -> words the model should produce for it (multi-token allowed)
    verbalizer: dict[str, str] = field(default_factory=dict)
    # prompt with {field} slots; the answer slot follows the text (decoder continuation,
    # encoder [MASK]s, T5 target)
    template: str = ""
    # text appended to each candidate (ReCoRD: the rest of the query after the entity)
    candidate_suffix: str = ""
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
    eval_split: Optional[str] = None
    max_length: int = 256
    batch_size: int = 8
    eval_batch_size: int = 16
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
    # index into the task's patterns for the model's family (null: the task's own template)
    pattern: Optional[int] = None


@dataclass
class FinetuneConfig(MethodConfig):
    name: str = "finetune"
    lr: float = 2e-5


@dataclass
class PromptTuningConfig(MethodConfig):
    name: str = "prompt_tuning"
    lr: float = 0.3
    prompt_length: int = 20
    init: str = "random"
    # half-width of the uniform init (Lester et al.: 0.5)
    init_range: float = 0.5
    # True: prompt + LM tuning (the LM trains too, at lm_lr)
    tune_lm: bool = False
    lm_lr: float = 1e-5
    # init=vocab (and class_label's leftover rows) samples from this many most frequent tokens
    init_vocab_top: int = 5000
    # init=text: the string whose token embeddings fill the prompt (repeated or truncated)
    init_text: str = ""


@dataclass
class AdapterConfig(MethodConfig):
    """Houlsby et al. 2019 bottleneck adapters (methods/adapter.py)."""

    name: str = "adapter"
    lr: float = 1e-3
    # bottleneck size m (Houlsby et al.: 8, 64 or 256)
    bottleneck: int = 64
    # houlsby: after attention and after the feed-forward sublayer; pfeiffer: after the feed-forward only
    placement: str = "houlsby"
    activation: str = "relu"
    # std of the down-projection's normal init (the up-projection starts at zero)
    init_std: float = 0.01
    # also train the backbone's layer norms (Houlsby et al. do)
    train_layer_norms: bool = True


@dataclass
class LoRAConfig(MethodConfig):
    """Hu et al. 2021 LoRA through PEFT (methods/lora.py)."""

    name: str = "lora"
    lr: float = 5e-4
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    # null: the architecture's query and value projections (GPT-2: the fused c_attn)
    target_modules: Optional[list[str]] = None
    # merge B·A into the frozen weights when training ends
    merge: bool = True


@dataclass
class PTuningConfig(MethodConfig):
    name: str = "ptuning"
    lr: float = 1e-3
    # template with [P] virtual tokens among the task's own words; "" = prompt_length [P]s
    # before the task's template
    template: str = ""
    prompt_length: int = 8
    # prompt encoder: lstm (bi-LSTM + MLP, the paper's) or mlp
    encoder: str = "lstm"
    encoder_hidden: int = 0  # 0 = d_model
    # True: only the prompt encoder trains; False: the LM trains too (the few-shot SuperGLUE setting)
    freeze_lm: bool = True
    lm_lr: float = 1e-5


@dataclass
class PTuningV2Config(MethodConfig):
    name: str = "ptuning_v2"
    lr: float = 1e-2
    head: str = "cls"
    prompt_length: int = 16
    # 0: the prefixes train directly (P-Tuning v2's default); > 0: MLP reparameterization of this width
    reparam_hidden: int = 0


@dataclass
class PrefixTuningConfig(PTuningV2Config):
    name: str = "prefix_tuning"
    lr: float = 5e-3
    head: str = "lm"
    prompt_length: int = 10
    reparam_hidden: int = 512


@dataclass
class ICLConfig(MethodConfig):
    name: str = "icl"
    shots: int = 0
    # random: a seeded sample of the train split; balanced: round-robin over the labels
    selection: str = "random"
    # contextual calibration (Zhao et al. 2021) with a content-free ("N/A") input
    calibrate: bool = False
    # decoder-only: encode the demonstration block once and reuse its key/value cache
    cache_demos: bool = True


@dataclass
class CoTConfig(MethodConfig):
    name: str = "cot"
    # 0: zero-shot ("Let's think step by step."); k: the first k demonstrations
    shots: int = 0
    # each {fields: {<template field>: text}, rationale: text, answer: text}
    demonstrations: list[Any] = field(default_factory=list)
    demonstrations_file: str = ""
    max_new_tokens: int = 64
    answer_tokens: int = 8


@dataclass
class PETConfig(MethodConfig):
    name: str = "pet"
    lr: float = 1e-5
    pattern: Optional[int] = 0
    # True: fixed-prompt LM tuning; False: tuning-free prompting (nothing trains)
    tune_lm: bool = True


@dataclass
class TrainerConfig:
    """The Lightning Trainer arguments a sweep varies; each is passed to ``lightning.Trainer``."""

    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
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


METHOD_SCHEMAS = {
    "ptuning": PTuningConfig,
    "ptuning_v2": PTuningV2Config,
    "prefix_tuning": PrefixTuningConfig,
    "icl": ICLConfig,
    "cot": CoTConfig,
    "pet": PETConfig,
    "finetune": FinetuneConfig,
    "prompt_tuning": PromptTuningConfig,
    "adapter": AdapterConfig,
    "lora": LoRAConfig,
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="task", name="task_schema", node=TaskConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    for name, schema in METHOD_SCHEMAS.items():
        cs.store(group="method", name=f"{name}_schema", node=schema)


def validate(cfg) -> None:
    """Checks that need more than one group; raises ConfigError with one line."""
    from promptscale.methods import method_class

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
    for key in ("max_length", "batch_size", "eval_batch_size"):
        check_min(data, key, 1, where="data")
    for key in ("train_size", "eval_size"):
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
    if "[MASK]" in task.template and model.family != "encoder":
        raise ConfigError(
            f"task {task.name}: a [MASK] slot inside the template is for masked LMs, not {model.family} models"
        )
