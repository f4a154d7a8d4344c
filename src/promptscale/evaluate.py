"""Using a finished run without retraining it: ``promptscale eval`` (another split or a file, with
metrics, a results line and predictions), ``promptscale predict`` (predictions on new inputs) and
``promptscale export`` (the trained prompt, prefixes or LoRA as a PEFT adapter folder).

A run is rebuilt from its ``weights-<hash>.safetensors`` alone: the file's metadata holds the run's
resolved config and config hash; the backbone is loaded as the run loaded it and the trainable
weights are put back into a freshly built module (see ``promptscale.predictions``).
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import OmegaConf

from promptscale import __version__
from promptscale.errors import ConfigError, DataError
from promptscale.predictions import WEIGHTS_GLOB, predictions_path, read_weights_metadata

# what an evaluation may change: which data it reads, and where it runs
EVAL_OVERRIDES = ("data.", "trainer.accelerator", "trainer.devices", "trainer.precision")


def weights_of(run: Path) -> Path:
    """The weights file of a run dir (its one ``weights-<hash>.safetensors``), or the file itself."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise ConfigError(f"{run}: no such run dir or weights file")
    # runs finished before files were named by config hash kept an unnamed weights.safetensors
    found = sorted(run.glob(WEIGHTS_GLOB)) or sorted(run.glob("weights.safetensors"))
    if not found:
        raise ConfigError(
            f"{run}: no {WEIGHTS_GLOB} (not a finished run's dir, or the whole LM trained and keep_lm_weights was off)"
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:4]) + (f", … {len(found) - 4} more" if len(found) > 4 else "")
        raise ConfigError(f"{run}: holds the weights of {len(found)} runs ({names}); name the file of the one you mean")
    return found[0]


def apply_overrides(cfg, overrides: list[str]) -> None:
    """``key=value`` overrides of the data (and the device), checked like the run's own config."""
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        if not key.startswith(EVAL_OVERRIDES):
            raise ConfigError(
                f"override {key}: an evaluation may change only data.* and trainer.accelerator/devices/precision"
            )
        old = OmegaConf.select(cfg, key, default=KeyError)
        if old is KeyError:
            raise ConfigError(f"override {key}: no such key in the run's config")
        new = OmegaConf.from_dotlist([item])
        value = OmegaConf.select(new, key)
        if old is not None and value is not None and not isinstance(value, type(old)):
            if not (isinstance(old, float) and isinstance(value, int)) or isinstance(value, bool):
                raise ConfigError(f"override {key}={value!r}: expected {type(old).__name__}")
        OmegaConf.update(cfg, key, value, merge=False)


def read_file(task, path: Path):
    """Examples of a jsonl / CoNLL file, read by the task's own reader and checked as a split is."""
    from promptscale.data.encoding import check_template
    from promptscale.data.readers import READERS

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    examples = READERS[task.reader](path, list(task.labels) or None, **task.reader_options)
    if not examples:
        raise DataError(f"{path}: no records")
    if task.kind != "tagging":
        check_template(task, examples[0], str(path))
    return examples


def unlabeled(example) -> bool:
    return example.label is None and example.answers is None and example.tags is None


def stored_config(config: dict):
    """A finished run's recorded config, ready to rebuild the run: settings added to its method
    since it ran get their neutral value (``results.ADDED_SETTINGS``: what the run computed), and
    a prompt that started from a file starts at random (the trained weights replace it, and the
    file need not exist any more). What the run recorded besides its settings (``data.fingerprint``,
    ``file_digests``) is left out."""
    import dataclasses

    from promptscale.methods import METHODS, method_schema
    from promptscale.results import ADDED_SETTINGS

    cfg = OmegaConf.create({k: v for k, v in config.items() if k != "file_digests"})
    if "fingerprint" in (cfg.get("data") or {}):
        del cfg.data["fingerprint"]
    method = cfg.get("method") or {}
    if method.get("name") in METHODS:
        fields = {f.name for f in dataclasses.fields(method_schema(method.name))}
        for (group, key), neutral in ADDED_SETTINGS.items():
            if group == "method" and key in fields and key not in method:
                method[key] = neutral
        if method.get("init") == "file":
            method.init = "random"
    return cfg


def check_trained_on(config: dict, cfg) -> dict[str, str]:
    """ConfigError unless the model folder ``cfg`` names holds what the run (its recorded
    ``config``) trained on: trained weights belong to their base model. Returns the model's
    ``file_digests`` entry for the evaluation's own line (empty for a model not read from a folder)."""
    from promptscale.models import input_files
    from promptscale.results import file_digests

    trained_on = (config.get("file_digests") or {}).get("model.path")
    if not trained_on:
        return {}
    if not (folder := input_files(cfg.model)):
        raise ConfigError(
            f"model.path={cfg.model.path}: no such folder here, and the run trained on a model folder "
            f"(sha256 {trained_on}); give the folder that holds it (model.path=<folder>)"
        )
    now = file_digests(folder)["model.path"]
    if now != trained_on:
        raise ConfigError(
            f"model.path={cfg.model.path}: holds other weights than the run trained on (sha256 {now}, the run's "
            f"{trained_on}); its trained weights belong to that model"
        )
    return {"model.path": trained_on}


def prepare(run: Path, overrides: list[str], file: Path | None):
    """The run's config with the overrides, its hash, the weights file, the read data and the model
    folder's digest (``check_trained_on``); all checked before any model loads."""
    from promptscale.config import validate
    from promptscale.data.datamodule import TaskDataModule
    from promptscale.methods import method_class

    weights = weights_of(run)
    config, key = read_weights_metadata(weights)
    cfg = stored_config(config)
    apply_overrides(cfg, list(overrides))
    validate(cfg)
    digests = check_trained_on(config, cfg)
    data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
    if file is None:
        data.read()
    else:
        data.eval_examples = read_file(cfg.task, file)
        data.eval_split = str(Path(file).resolve())
        train = data.split_path(cfg.task.train_split) if cfg.data.dir else None
        if train is not None and train.is_file():  # demonstrations (icl); nothing else reads it
            data.train_examples = data._subsample(
                data.read_split(cfg.task.train_split), cfg.data.train_size, "train_size", cfg.seed
            )
    method_class(cfg.method.name).check_data(cfg, data)
    return cfg, key, weights, data, digests


def rebuilt_module(cfg, weights: Path):
    """The run's module with its trained weights, in its after-training state."""
    from promptscale.methods import method_class
    from promptscale.models import load_backbone
    from promptscale.predictions import load_weights

    backbone = load_backbone(cfg.model)
    module = method_class(cfg.method.name)(cfg, backbone)
    load_weights(module, weights)
    return module, backbone


def _validate(cfg, module, backbone, data, out_dir: Path) -> dict:
    import lightning as L

    data.attach(backbone.tokenizer, cfg.model.family, cfg.method.head)
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.trainer).items() if v is not None}
    evaluator = L.Trainer(
        **{k: v for k, v in kwargs.items() if k in ("accelerator", "devices", "precision")},
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(out_dir),
    )
    results = evaluator.validate(module, datamodule=data, verbose=False, weights_only=True)
    return {k.removeprefix("eval/"): float(v) for k, v in results[0].items()}


def evaluation_config(cfg, key: str, file: Path | None, kind: str, digests: dict | None = None) -> tuple[dict, str]:
    """The evaluation's config (the run's, with its overrides, what it evaluates and ``digests``,
    the model folder's as ``file_digests``) and hash."""
    from promptscale.files import file_sha256
    from promptscale.results import config_hash

    config = OmegaConf.to_container(cfg, resolve=True)
    target = {"of": key, "split": None if file else (cfg.data.eval_split or cfg.task.eval_split)}
    if file is not None:
        target.update(file=str(Path(file).resolve()), file_sha256=file_sha256(file))
    config[kind] = target
    if digests:
        config["file_digests"] = dict(digests)
    return config, config_hash(config)


def evaluate(run: Path, overrides=(), file: Path | None = None, results_file: Path | None = None) -> dict:
    """Evaluate a finished run on a split (``data.eval_split=...``) or a labeled file: write its
    predictions under ``<run dir>/eval/<hash>/`` and append a results line (``kind: eval``,
    ``of``: the run's config hash) to ``results_file`` (default ``<run dir>/eval/results.jsonl``)."""
    from promptscale.metrics import task_score
    from promptscale.predictions import paths_relative_to, prediction_records, write_predictions
    from promptscale.results import (
        append_result,
        finished_record,
        git_commit,
        library_versions,
        redact,
        secret_values,
    )

    start = time.time()
    cfg, key, weights, data, digests = prepare(run, overrides, file)
    missing = sum(unlabeled(e) for e in data.eval_examples)
    if missing:
        raise DataError(f"{file or data.eval_split}: {missing} unlabeled record(s); use promptscale predict for those")
    config, eval_key = evaluation_config(cfg, key, file, "eval", digests)
    run_dir = weights.parent
    results_file = Path(results_file) if results_file else run_dir / "eval" / "results.jsonl"
    if done := finished_record(results_file, eval_key):
        print(f"promptscale: evaluation {eval_key} of {key} already in {results_file}")
        return done
    out_dir = results_file.parent / eval_key
    module, backbone = rebuilt_module(cfg, weights)
    metrics = _validate(cfg, module, backbone, data, out_dir)
    secrets = secret_values(config=config)
    predictions_file = predictions_path(out_dir, eval_key)
    written = write_predictions(predictions_file, prediction_records(cfg.task, data.eval_examples, module.collected))
    record = {
        "status": "finished",
        "kind": "eval",
        "of": key,
        "config_hash": eval_key,
        "config": config,
        "task": cfg.task.name,
        "method": cfg.method.name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "eval_split": config["eval"]["split"],
        "eval_file": config["eval"].get("file"),
        "eval_examples": len(data.eval_examples),
        "metrics": metrics,
        "score": task_score(metrics),
        "predictions": {"path": str(predictions_file.resolve()), **written},
        "weights": {"path": str(weights.resolve()), "bytes": weights.stat().st_size},
        "output_dir": str(out_dir),
        "wall_time_s": round(time.time() - start, 2),
        "version": __version__,
        "git_commit": git_commit(),
        "libraries": library_versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    record = paths_relative_to(redact(record, secrets), results_file)
    append_result(results_file, record)
    print(
        f"promptscale: evaluation of {key} ({cfg.method.name} on {cfg.task.name}, "
        f"{record['eval_file'] or record['eval_split']}): score {record['score']:.4f} -> {results_file}"
    )
    return record


def predict(run: Path, file: Path, overrides=(), out: Path | None = None) -> Path:
    """Predictions of a finished run on the examples of ``file`` (labels not needed), written to
    ``out`` (default ``<run dir>/predict/predictions-<hash>.jsonl.gz``); returns the path."""
    from promptscale.predictions import prediction_records, write_predictions

    cfg, key, weights, data, digests = prepare(run, overrides, file)
    _, predict_key = evaluation_config(cfg, key, file, "predict", digests)
    out = Path(out) if out else predictions_path(weights.parent / "predict", predict_key)
    module, backbone = rebuilt_module(cfg, weights)
    module.with_metrics = False
    _validate(cfg, module, backbone, data, out.parent)
    written = write_predictions(out, prediction_records(cfg.task, data.eval_examples, module.collected))
    print(f"promptscale: {written['n']} predictions of {key} on {file} -> {out} (sha256 {written['sha256']})")
    return out


def export(run: Path, peft_dir: Path, push_to_hub: str | None = None) -> Path:
    """Write the run's prompt, prefixes or LoRA as a PEFT adapter folder (``base_model_name_or_path``:
    the model's hub id), and with ``push_to_hub`` upload it to that hub repo."""
    from promptscale.config import validate

    weights = weights_of(run)
    config, key = read_weights_metadata(weights)
    cfg = stored_config(config)
    validate(cfg)
    check_trained_on(config, cfg)
    from promptscale.methods import method_class

    if not hasattr(method_class(cfg.method.name), "save_peft"):
        raise ConfigError(f"method={cfg.method.name} has no PEFT format; prompt_tuning, prefix_tuning and lora export")
    module, _ = rebuilt_module(cfg, weights)
    peft_dir = Path(peft_dir)
    module.save_peft(peft_dir)
    print(f"promptscale: {cfg.method.name} of run {key} -> {peft_dir} (PEFT, base {module.base_model_id()})")
    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        try:
            api.create_repo(push_to_hub, exist_ok=True)
            api.upload_folder(repo_id=push_to_hub, folder_path=str(peft_dir), commit_message=f"promptscale run {key}")
        except Exception as err:  # noqa: BLE001 - the hub's errors are the user's to fix: one line
            raise ConfigError(f"--push-to-hub {push_to_hub}: {type(err).__name__}: {err}") from None
        print(f"promptscale: pushed {peft_dir} to https://huggingface.co/{push_to_hub}")
    return peft_dir
