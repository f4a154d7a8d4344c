"""``promptscale-train``: one run (or, with ``--multirun``, a sweep) of a method on a task and model.

Order matters: the config and the data are checked before any model is loaded, so bad input
fails in seconds with one line. A run resumes from its run dir's resume checkpoint, stops
cleanly on SIGTERM (saving one), never lets tracking (W&B) cost it, and keeps secrets (API keys,
tokens) out of everything it writes. README "Guarantees" says what holds and how it is tested.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from promptscale import __version__
from promptscale.config import register_configs, validate
from promptscale.errors import PromptscaleError

CONF_DIR = str(Path(__file__).resolve().parent / "conf")  # shipped inside the package
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


class Preempted(Exception):
    """The run was stopped by SIGTERM (a scheduler's preemption) after saving a resume checkpoint."""


def error_line(err: BaseException) -> str:
    """A Hydra / OmegaConf error (and its cause) as one line: what is wrong and where."""
    parts: list[str] = []
    while err is not None and len(parts) < 3:
        words: list[str] = []
        options: list[str] | None = None
        for line in str(err).splitlines():
            line = line.strip()
            if line.startswith(("Config search path", "Set the environment")):
                break
            if not line or line.startswith(("full_key:", "object_type=", "reference_type=")):
                continue
            if options is not None and " " not in line:  # one option of "Available options in 'task':"
                if not line.endswith("_schema"):
                    options.append(line)
                continue
            if line.startswith("Available options"):
                options = []
                line = "- " + line
            words.append(line)
        text = " ".join(words) + (" " + ", ".join(options) if options else "")
        if text and text not in parts:
            parts.append(text)
        err = err.__cause__
    return "; ".join(parts)


@contextlib.contextmanager
def _redacted_argv(secrets: list[str]):
    """W&B records the command line: show it the redacted one."""
    from promptscale.results import redact

    argv = sys.argv
    sys.argv = redact(list(argv), secrets)
    try:
        yield
    finally:
        sys.argv = argv


def _say_tracking_failed(what: str, err: BaseException) -> None:
    message = " ".join(f"{type(err).__name__}: {err}".split())
    print(
        f"promptscale: W&B {what} ({message}); the run goes on, its result goes to the local results store",
        file=sys.stderr,
    )


def make_logger(cfg, out_dir: Path, config: dict, secrets: list[str] | None = None):
    """W&B (offline by default), CSV, or nothing. If W&B cannot start, say so once and log to CSV;
    if it fails later (full disk, lost service), say so once and carry on without it. The config
    it records has its secrets cut out (see ``promptscale.results.redact``)."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from promptscale.results import redact, secret_values

    secrets = secret_values() if secrets is None else secrets

    class GuardedWandbLogger(WandbLogger):
        """A WandbLogger whose calls never raise: the first failure is reported, later calls do nothing."""

        failed = False

        def _safely(self, call, *args, **kwargs):
            if self.failed:
                return None
            try:
                return call(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - tracking must never cost a run
                self.failed = True
                _say_tracking_failed("stopped working", err)
                return None

        def log_metrics(self, metrics, step=None):
            return self._safely(super().log_metrics, metrics, step)

        def log_hyperparams(self, params, *args, **kwargs):
            return self._safely(super().log_hyperparams, params, *args, **kwargs)

        def log_graph(self, model, input_array=None):
            return self._safely(super().log_graph, model, input_array)

        def after_save_checkpoint(self, checkpoint_callback):
            return self._safely(super().after_save_checkpoint, checkpoint_callback)

        def save(self):
            return self._safely(super().save)

        def finalize(self, status):
            return self._safely(super().finalize, status)

        def finish(self, exit_code: int = 0):
            """End the W&B run, also after a failure: a run left open would be reused by the next
            one in this process (a sweep's next job)."""
            if self._experiment is None:
                return
            try:
                self._experiment.finish(exit_code=exit_code)
            except Exception as err:  # noqa: BLE001
                if not self.failed:
                    self.failed = True
                    _say_tracking_failed("could not finish", err)

    kind = cfg.logger.kind
    if kind == "none":
        return None
    if kind == "wandb":
        try:
            import wandb

            if wandb.run is not None:  # left open by an earlier run in this process: never log into it
                with contextlib.suppress(Exception):
                    wandb.run.finish(exit_code=1)
            logger = GuardedWandbLogger(
                project=cfg.logger.project,
                save_dir=str(out_dir),
                offline=cfg.logger.mode == "offline",
                group=redact(cfg.logger.group or cfg.experiment, secrets),
                tags=redact([*cfg.logger.tags, cfg.method.name, cfg.model.name, cfg.task.name], secrets),
                config=redact(config, secrets),
            )
            with _redacted_argv(secrets):
                _ = logger.experiment  # start now, so a failure is caught here and not mid-training
            return logger
        except Exception as err:  # noqa: BLE001 - tracking must never cost a run
            _say_tracking_failed(f"could not start; logging to CSV in {out_dir} instead", err)
    return CSVLogger(str(out_dir), name="csv")


def peak_memory_bytes() -> int:
    import torch

    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def trainer_kwargs(cfg) -> dict:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    if isinstance(kwargs.get("strategy"), dict):  # a strategy with options (conf/trainer/fsdp.yaml): _target_
        from hydra.utils import instantiate

        kwargs["strategy"] = instantiate(cfg.trainer.strategy)
    return {k: v for k, v in kwargs.items() if v is not None}


def global_rank() -> int:
    """This process's rank among those training together (0 alone): only rank 0 writes results.
    Lightning sets it when its strategy starts, and from the launcher's env (RANK, LOCAL_RANK,
    SLURM_PROCID) on import, so it is right also for a process that fails before training."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0)


def job_threads() -> int:
    """The cores this job really has: its CPU affinity (taskset, cgroups cpusets), at most SLURM's
    cpus-per-task, at most OMP_NUM_THREADS when set (Ray and our submitit_local launcher set it).
    torch's default (every core of the machine) runs several times slower per step on a shared node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            cores = min(cores, int(value))
    return cores


def run(cfg: DictConfig, out_dir: Path, results_file: Path, keep_backbone: bool = False, callbacks=()) -> dict:
    """Train and evaluate once and append the results line to ``results_file``; return it.

    Bad input raises PromptscaleError before any model loads and writes nothing. A run whose
    config hash already has a finished line is skipped (``skip_finished``). A run that fails
    after that writes a ``failed`` line with the error, then re-raises; one stopped by SIGTERM
    writes nothing and raises Preempted (the same command resumes it). Lines and W&B configs
    have secrets cut out. ``keep_backbone`` keeps a pristine copy of the backbone in memory for
    the next runs of this process (an in-process sweep); ``callbacks`` join the fit Trainer's."""
    from promptscale.results import append_result, config_hash, finished_record, redact, secret_values

    validate(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    key = config_hash(config)
    if cfg.skip_finished and (done := finished_record(results_file, key)):
        print(f"promptscale: skipping {cfg.method.name} on {cfg.task.name} with {cfg.model.name}: finished as {key}")
        return done
    from promptscale.data.datamodule import TaskDataModule

    data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
    data.read()
    from promptscale.methods import method_class

    method_class(cfg.method.name).check_data(cfg, data)
    secrets = secret_values(config=config)
    try:
        record = _train(cfg, data, out_dir, config, key, secrets, keep_backbone, callbacks)
    except Preempted:
        raise  # not failed: the same command resumes it
    except Exception as err:
        if global_rank() == 0:  # one line per run, also with several processes (DDP)
            append_result(results_file, redact(_failure(cfg, config, key, out_dir, err), secrets))
        raise
    record = redact(record, secrets)
    if global_rank() != 0:
        return record
    append_result(results_file, record)
    if not cfg.keep_checkpoint:
        from promptscale.resume import resume_checkpoint_path

        resume_checkpoint_path(out_dir, key).unlink(missing_ok=True)
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


def _train(
    cfg: DictConfig, data, out_dir: Path, config: dict, key: str, secrets=(), keep_backbone: bool = False, callbacks=()
) -> dict:
    import lightning as L
    import torch

    # Lightning's rank-zero INFO lines (accelerator summary, product tips) drown the run's own output
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    # our train loader does resume mid-epoch (SeededSampler), which Lightning cannot see
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")

    from promptscale.methods import method_class
    from promptscale.models import load_backbone

    start = time.time()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    backbone = load_backbone(cfg.model, keep=keep_backbone)
    module = method_class(cfg.method.name)(cfg, backbone)
    data.attach(backbone.tokenizer, cfg.model.family, cfg.method.head)

    from promptscale.resume import Resume, SafeCheckpointIO, SIGTERMException, resume_checkpoint_path

    logger = make_logger(cfg, out_dir, config, list(secrets))
    kwargs = trainer_kwargs(cfg)
    checkpoint = resume_checkpoint_path(out_dir, key)
    resume = Resume(checkpoint, cfg.checkpoint_every_n_steps, data, list(secrets))
    trainer = L.Trainer(
        **{k: v for k, v in kwargs.items() if k not in ("callbacks", "plugins")},
        callbacks=[*kwargs.get("callbacks", []), *callbacks, resume],
        plugins=[*kwargs.get("plugins", []), SafeCheckpointIO()],
        logger=logger or False,
        default_root_dir=str(out_dir),
    )
    resume_from = checkpoint if checkpoint.is_file() else None
    if resume_from:
        print(f"promptscale: resuming from {resume_from}", flush=True)
    try:
        if module.parameter_counts()["trainable_params"]:  # tuning-free methods (icl, cot) only evaluate
            trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
        # the final evaluation always covers the whole eval split (data.eval_size subsamples it)
        evaluator = L.Trainer(
            **{  # trainer_kwargs anew: a strategy object serves one Trainer
                k: v
                for k, v in trainer_kwargs(cfg).items()
                if k in ("accelerator", "devices", "num_nodes", "strategy", "precision", "enable_progress_bar")
            },
            logger=logger or False,
            default_root_dir=str(out_dir),
            enable_model_summary=False,
        )
        results = evaluator.validate(module, datamodule=data, verbose=False, weights_only=True)
    except BaseException as err:
        if hasattr(logger, "finish"):  # W&B: close this run, so that nothing later logs into it
            logger.finish(exit_code=1)
        if not isinstance(err, SIGTERMException):
            raise
        saved = (
            f"resume checkpoint at step {resume.saved_step}: {checkpoint}" if checkpoint.is_file() else "no checkpoint"
        )
        raise Preempted(
            f"stopped by SIGTERM at step {trainer.global_step}; {saved}; the same command resumes it"
        ) from None
    metrics = {k.removeprefix("eval/"): float(v) for k, v in results[0].items()}

    from promptscale.metrics import task_score

    record = {
        "status": "finished",
        **_identity(cfg, config, key, out_dir),
        "model_params": int(cfg.model.params) or sum(p.numel() for p in backbone.parameters()),
        "metrics": metrics,
        "score": task_score(metrics),
        **module.parameter_counts(),
        "checkpoint_bytes": module.checkpoint_bytes(),
        "train_steps": trainer.global_step,
        "wall_time_s": round(time.time() - start, 2),
        "peak_memory_bytes": peak_memory_bytes(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if logger is not None:
        logger.log_metrics(
            {k: record[k] for k in ("trainable_params", "total_params", "wall_time_s", "peak_memory_bytes", "score")}
        )
        if hasattr(logger, "finish"):  # W&B
            logger.finish()
        else:
            logger.save()
    return record


def _scrub_hydra_files(folder: Path, secrets: list[str]) -> None:
    """Hydra saves the command line's overrides (``.hydra/*.yaml``, ``multirun.yaml``): cut secrets out."""
    if not secrets:
        return
    from promptscale.results import REDACTED

    for path in [*folder.glob(".hydra/*.yaml"), folder / "multirun.yaml"]:
        if path.is_file() and any(secret in (text := path.read_text()) for secret in secrets):
            for secret in secrets:
                text = text.replace(secret, REDACTED)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)


_task_started = False  # past composition: errors from here on are the run's own


def sweep_position(hydra_cfg) -> str:
    """ "sweep run i of N: <this job's overrides>" (N from the sweep's own lists: the experiment's
    ``hydra.sweeper.params`` and the command line's comma lists). The command line is read from
    the sweep's ``multirun.yaml`` (Hydra writes it before launching), not from ``sys.argv``: under
    submitit and Ray the job runs in another process, whose argv is the launcher's."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [f"{key}={value}" for key, value in (hydra_cfg.sweeper.get("params") or {}).items()]
    sweep_dir = OmegaConf.select(hydra_cfg, "sweep.dir", default=None)
    saved = Path(sweep_dir) / "multirun.yaml" if sweep_dir else None
    if saved is not None and saved.is_file():
        given += list(OmegaConf.load(saved).hydra.overrides.task)
    else:
        given += [arg for arg in sys.argv[1:] if "=" in arg and not arg.startswith("-")]
    sizes = {}
    for override in OverridesParser.create().parse_overrides(given):
        sizes[override.key_or_group] = len(list(override.sweep_iterator())) if override.is_sweep_override() else 1
    total = 1
    for size in sizes.values():
        total *= size
    return f"sweep run {hydra_cfg.job.num + 1} of {total}: {' '.join(hydra_cfg.overrides.task)}"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from promptscale.results import secret_values

    global _task_started
    _task_started = True
    import torch

    torch.set_num_threads(job_threads())
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    out_dir, results_file = hydra_paths(cfg)
    secrets = secret_values()
    _scrub_hydra_files(out_dir, secrets)
    if sweeping:
        _scrub_hydra_files(Path(HydraConfig.get().sweep.dir), secrets)
        print(f"promptscale: {sweep_position(HydraConfig.get())}", flush=True)
    try:
        run(cfg, out_dir, results_file, keep_backbone=sweeping)
    except PromptscaleError as err:
        print(f"promptscale: error: {err}", file=sys.stderr)
        if not sweeping:
            sys.exit(2)
    except Preempted as err:
        # the whole process was asked to stop: no further jobs of a sweep either
        print(f"promptscale: preempted: {err}", file=sys.stderr)
        sys.exit(143)
    except Exception as err:
        if not sweeping:
            raise
        # one failing job of a sweep is recorded (a failed line) and does not stop the others
        print(f"promptscale: run failed, recorded as failed: {type(err).__name__}: {err}", file=sys.stderr)


def main() -> None:
    """``promptscale-train``: Hydra's own errors (unknown group option, misspelt key, wrong type)
    become one line too (``promptscale: error: …``, exit 1 as Hydra's); HYDRA_FULL_ERROR=1 shows
    them whole."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # so that they reach us instead of being printed by Hydra
    try:
        _hydra_main()
    except (HydraException, OmegaConfBaseException) as err:
        if full or _task_started:
            raise
        print(f"promptscale: error: {error_line(err)}", file=sys.stderr)
        sys.exit(1)  # Hydra's own exit status for these; ours (PromptscaleError) exit 2


if __name__ == "__main__":
    main()
