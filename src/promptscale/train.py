"""``promptscale-train``: one run (or, with ``--multirun``, a sweep) of a method on a task and model.

Order matters: the config and the data are checked before any model is loaded, so bad input
fails in seconds with one line.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from promptscale import __version__
from promptscale.config import register_configs, validate
from promptscale.errors import PromptscaleError

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
register_configs()


def hydra_paths(cfg) -> tuple[Path, Path]:
    """This job's output dir, and the results store: relative to the run dir (single run) or
    to the sweep dir (multirun), so that every job of a sweep appends to one file."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    root = Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else out_dir
    return out_dir, root / cfg.results_file


def compose(overrides: list[str] = ()) -> DictConfig:
    """The config ``promptscale-train`` would run with these overrides (for tests, notebooks, benchmarks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides))


def make_logger(cfg, out_dir: Path, config: dict):
    """W&B (offline by default), CSV, or nothing. If W&B cannot start, say so once and log to CSV."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    kind = cfg.logger.kind
    if kind == "none":
        return None
    if kind == "wandb":
        try:
            logger = WandbLogger(
                project=cfg.logger.project,
                save_dir=str(out_dir),
                offline=cfg.logger.mode == "offline",
                group=cfg.logger.group or cfg.experiment,
                tags=[*cfg.logger.tags, cfg.method.name, cfg.model.name, cfg.task.name],
                config=config,
            )
            logger.experiment  # start now, so a failure is caught here and not mid-training
            return logger
        except Exception as err:  # noqa: BLE001 - tracking must never cost a run
            print(f"promptscale: W&B could not start ({err}); logging to CSV in {out_dir} instead", file=sys.stderr)
    return CSVLogger(str(out_dir), name="csv")


def peak_memory_bytes() -> int:
    import torch

    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def trainer_kwargs(cfg) -> dict:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    return {k: v for k, v in kwargs.items() if v is not None}


def run(cfg: DictConfig, out_dir: Path, results_file: Path) -> dict:
    """Train and evaluate once and append the results line to ``results_file``; return it.

    Bad input raises PromptscaleError before any model loads and writes nothing. A run whose
    config hash already has a finished line is skipped (``skip_finished``). A run that fails
    after that writes a ``failed`` line with the error, then re-raises."""
    from promptscale.results import append_result, config_hash, finished_record

    validate(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    key = config_hash(config)
    if cfg.skip_finished and (done := finished_record(results_file, key)):
        print(f"promptscale: skipping {cfg.method.name} on {cfg.task.name} with {cfg.model.name}: finished as {key}")
        return done
    from promptscale.data.datamodule import TaskDataModule

    data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
    data.read()
    try:
        record = _train(cfg, data, out_dir, config, key)
    except Exception as err:
        append_result(results_file, _failure(cfg, config, key, out_dir, err))
        raise
    append_result(results_file, record)
    print(
        f"promptscale: {cfg.method.name} on {cfg.task.name} with {cfg.model.name}: score {record['score']:.4f} "
        f"({record['trainable_params']:,} trainable of {record['total_params']:,} params) -> {results_file}"
    )
    return record


def _identity(cfg, config: dict, key: str, out_dir: Path) -> dict:
    from promptscale.results import git_commit

    return {
        "config_hash": key,
        "config": config,
        "task": cfg.task.name,
        "method": cfg.method.name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "output_dir": str(out_dir),
        "version": __version__,
        "git_commit": git_commit(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _failure(cfg, config: dict, key: str, out_dir: Path, err: Exception) -> dict:
    return {"status": "failed", "error": f"{type(err).__name__}: {err}", **_identity(cfg, config, key, out_dir)}


def _train(cfg: DictConfig, data, out_dir: Path, config: dict, key: str) -> dict:
    import lightning as L
    import torch

    # Lightning's rank-zero INFO lines (accelerator summary, product tips) drown the run's own output
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)

    from promptscale.methods import method_class
    from promptscale.models import load_backbone

    start = time.time()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    backbone = load_backbone(cfg.model)
    module = method_class(cfg.method.name)(cfg, backbone)
    data.attach(backbone.tokenizer, cfg.model.family, cfg.method.head)

    logger = make_logger(cfg, out_dir, config)
    kwargs = trainer_kwargs(cfg)
    trainer = L.Trainer(**kwargs, logger=logger or False, default_root_dir=str(out_dir))
    trainer.fit(module, datamodule=data)
    # the final evaluation always covers the whole eval split (data.eval_size subsamples it)
    evaluator = L.Trainer(
        **{k: v for k, v in kwargs.items() if k in ("accelerator", "devices", "precision", "enable_progress_bar")},
        logger=logger or False,
        default_root_dir=str(out_dir),
        enable_model_summary=False,
    )
    metrics = {k.removeprefix("eval/"): float(v) for k, v in evaluator.validate(module, datamodule=data, verbose=False)[0].items()}

    from promptscale.metrics import task_score

    record = {
        "status": "finished",
        **_identity(cfg, config, key, out_dir),
        "model_params": int(cfg.model.params) or sum(p.numel() for p in backbone.parameters()),
        "metrics": metrics,
        "score": task_score(metrics),
        **module.parameter_counts(),
        "train_steps": trainer.global_step,
        "wall_time_s": round(time.time() - start, 2),
        "peak_memory_bytes": peak_memory_bytes(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if logger is not None:
        logger.log_metrics({k: record[k] for k in ("trainable_params", "total_params", "wall_time_s", "peak_memory_bytes", "score")})
        if hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()
        else:
            logger.save()
    return record


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        run(cfg, *hydra_paths(cfg))
    except PromptscaleError as err:
        print(f"promptscale: error: {err}", file=sys.stderr)
        if not sweeping:
            sys.exit(2)
    except Exception as err:
        if not sweeping:
            raise
        # one failing job of a sweep is recorded (a failed line) and does not stop the others
        print(f"promptscale: run failed, recorded as failed: {type(err).__name__}: {err}", file=sys.stderr)


if __name__ == "__main__":
    main()
