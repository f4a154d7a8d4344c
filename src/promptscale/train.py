"""``promptscale-train``: one run (or, with ``--multirun``, a sweep) of a method on a task and model.

Order matters: the config and the data are checked before any model is loaded, so bad input
fails in seconds with one line. A run resumes from its run dir's resume checkpoint, stops
cleanly on SIGTERM (saving one), never lets tracking (W&B) cost it, and keeps secrets (API keys,
tokens) out of everything it writes. README "Guarantees" says what holds and how it is tested.

Why one module of this size: it is the run's lifecycle in order (check, claim, train, evaluate,
store) with every way a run can end (finished, failed, refused, preempted, interrupted) beside
it; the guarantees are in that order, and split across modules it could no longer be read in one
place. Tracking (W&B) is in :mod:`promptscale.tracking`, the results store in
:mod:`promptscale.results`, resuming in :mod:`promptscale.resume`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from promptscale import __version__
from promptscale.config import check_not_overridden, register_configs, validate
from promptscale.errors import ConfigError, PromptscaleError
from promptscale.files import atomic_path
from promptscale.tracking import make_logger

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
    return out_dir, Path(os.path.normpath(root / cfg.results_file))  # "run/../results.jsonl": the sweep's


def compose(overrides: list[str] = ()) -> DictConfig:
    """The config ``promptscale-train`` would run with these overrides (for tests, notebooks, benchmarks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides))


class Preempted(Exception):
    """The run was stopped by SIGTERM (a scheduler's preemption) after saving a resume checkpoint."""


class Interrupted(Exception):
    """The run was stopped by SIGINT (Ctrl-C); the message says which resume checkpoint is kept."""


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


def input_files(cfg) -> dict[str, str]:
    """Config key -> file or folder beside the data whose contents the run reads: a model given as
    a local folder (``models.input_files``) and the method's files (``input_files`` of its class)."""
    from promptscale.methods import method_class
    from promptscale.models import input_files as model_files

    return {**model_files(cfg.model), **method_class(cfg.method.name).input_files(cfg)}


def run(cfg: DictConfig, out_dir: Path, results_file: Path, keep_backbone: bool = False, callbacks=()) -> dict:
    """Train and evaluate once and append the results line to ``results_file``; return it.

    Bad input raises PromptscaleError before any model loads and writes nothing; so does a run
    dir or store that cannot be written. The config hash covers the examples read
    (``data.fingerprint``) and the contents of other files it reads (``file_digests``: a model's
    local folder, a method's files).
    A run claims its hash in the store (:class:`Claim`): a hash that
    another process is running is skipped (status ``running``, nothing written), one that has a
    finished line too (``skip_finished``). A run that fails after that writes a ``failed`` line
    with the error, then re-raises; one stopped by SIGTERM or SIGINT writes nothing and raises
    Preempted / Interrupted (the same command resumes it). A finished result that cannot be
    appended is kept in ``<run dir>/result-<hash>.json``, its weights in the resume checkpoint.
    Lines and W&B configs have secrets cut out. ``keep_backbone`` keeps a pristine copy of the
    backbone in memory for the next runs of this process (an in-process sweep); ``callbacks``
    join the fit Trainer's."""
    from promptscale.quiet import silence_known_notices
    from promptscale.results import (
        Claim,
        check_finite,
        check_writable,
        config_hash,
        data_fingerprint,
        file_digests,
        finished_record,
    )

    clock = StartupClock()
    silence_known_notices()
    check_finite(OmegaConf.to_container(cfg, resolve=True))
    validate(cfg)
    check_writable(results_file, out_dir)  # before anything is read or loaded (the tokenizer, for check_fit)
    from promptscale.data.datamodule import TaskDataModule

    data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
    data.read()
    from promptscale.methods import method_class

    method_class(cfg.method.name).check_data(cfg, data)
    data.check_fit(cfg)
    # the config is final: nothing after this (method, callbacks, data module) may change what ran
    OmegaConf.set_readonly(cfg, True)
    try:
        clock.mark("checks")
        # what ran, with what the data decided (a generic CoNLL task's tag set is read from its files)
        config = OmegaConf.to_container(cfg, resolve=True)
        config["data"]["fingerprint"] = data_fingerprint(data.train_examples, data.eval_examples)
        if files := input_files(cfg):
            config["file_digests"] = file_digests(files)
        key = config_hash(config)
        # every check passed: the run dir and the store's folder may now be made
        out_dir.mkdir(parents=True, exist_ok=True)
        Path(results_file).parent.mkdir(parents=True, exist_ok=True)
        # rank 0 claims for the run: DDP's other processes re-run this command and must join it, not skip it
        claim = Claim(results_file, key) if global_rank() == 0 else None
        if claim is not None and (holder := claim.acquire()):
            print(f"promptscale: skipping {what_run(cfg)}: {key} is being run by {holder} (claim {claim.path})")
            return {"status": "running", "config_hash": key, "claimed_by": holder}
        try:
            if cfg.skip_finished and (done := finished_record(results_file, key)):
                print(f"promptscale: skipping {what_run(cfg)}: finished as {key}")
                return done
            return _run_claimed(cfg, data, out_dir, results_file, config, key, keep_backbone, callbacks, clock)
        finally:
            if claim is not None:
                claim.release()

    finally:  # the caller's config object is theirs again (a notebook may change and re-run it)
        OmegaConf.set_readonly(cfg, None)


def _run_claimed(
    cfg, data, out_dir: Path, results_file: Path, config: dict, key: str, keep_backbone, callbacks, clock
) -> dict:
    """``run`` once the hash is claimed: train, then store the line (or keep it beside the run)."""
    import lightning as L

    from promptscale.results import (
        NonFiniteResult,
        StoreError,
        append_result,
        is_no_space,
        no_space,
        non_finite_keys,
        redact,
        secret_values,
    )
    from promptscale.resume import resume_checkpoint_path

    class KeepTrainer(L.Callback):  # the fit Trainer, to save the weights if the line cannot be stored
        trainer = None

        def on_fit_end(self, trainer, pl_module):
            self.trainer = trainer

    keep = KeepTrainer()
    secrets = secret_values(config=config)
    try:
        record = _train(cfg, data, out_dir, config, key, secrets, keep_backbone, [*callbacks, keep], clock)
    except (Preempted, Interrupted):
        raise  # not failed: the same command resumes it
    except Exception as err:
        shown = no_space(getattr(err, "filename", None) or out_dir) if is_no_space(err) else err
        if global_rank() == 0:  # one line per run, also with several processes (DDP)
            try:
                append_result(results_file, redact(_failure(cfg, config, key, out_dir, shown), secrets))
            except StoreError as store_err:
                print(f"promptscale: warning: the failed line was not stored: {store_err}", file=sys.stderr)
        if shown is not err:
            raise shown from err
        raise
    from promptscale.predictions import paths_relative_to

    record = paths_relative_to(redact(record, secrets), results_file)
    if global_rank() != 0:
        return record
    if bad := non_finite_keys({"metrics": record["metrics"], "score": record["score"]}):
        # a diverged run (NaN loss): a failed line, never a NaN in the store (not JSON) or a score
        error = NonFiniteResult(f"{what_run(cfg)} diverged: {', '.join(bad)}; recorded as failed in {results_file}")
        record.update(status="failed", error=f"NonFiniteResult: {', '.join(bad)}", score=None,
                      metrics={k: v if math.isfinite(v) else None for k, v in record["metrics"].items()})  # fmt: skip
        append_result(results_file, record)
        raise error
    checkpoint = resume_checkpoint_path(out_dir, key)
    try:
        append_result(results_file, record)
    except StoreError as err:
        kept = _keep_result(out_dir, key, record, keep, checkpoint)
        raise StoreError(f"{err}; the finished result is kept in {kept}") from err
    if not cfg.keep_checkpoint:
        checkpoint.unlink(missing_ok=True)
    print(
        f"promptscale: {what_run(cfg)}: score {record['score']:.4f} "
        f"({record['trained_params']:,} trained, {record['kept_params']:,} kept of {record['total_params']:,} params) "
        f"-> {results_file}"
    )
    return record


_runs_in_process = 0


class StartupClock:
    """Where a run's start-up time goes, up to its first training step (``startup_s`` in its line):
    ``imports`` (process start to this run: interpreter, imports, Hydra; null for a later run of
    an in-process sweep), ``checks`` (config, data read, fit checks), ``setup`` (run dir, claim,
    Lightning), ``model`` (tokenizer, weights, the method's module), ``data`` (tokenizing and the
    Trainer's own start, to the first batch), ``first_step`` (that batch) and ``to_first_step``
    (their sum). A run with no training step here (tuning-free, or resumed past its last) has
    null ``data``, ``first_step`` and ``to_first_step``."""

    def __init__(self) -> None:
        import psutil

        global _runs_in_process
        _runs_in_process += 1
        self.last = time.time()
        first = _runs_in_process == 1
        self.marks: dict[str, float | None] = {"imports": self.last - psutil.Process().create_time() if first else None}

    def mark(self, phase: str) -> None:
        """The time since the previous mark is ``phase``'s (the first mark of a phase counts)."""
        now = time.time()
        self.marks.setdefault(phase, now - self.last)
        self.last = now

    def callback(self):
        """A Lightning callback marking ``data`` at the first training batch and ``first_step`` after it."""
        import lightning as L

        clock = self

        class FirstStep(L.Callback):
            def on_train_batch_start(self, *args) -> None:
                clock.mark("data")

            def on_train_batch_end(self, *args) -> None:
                clock.mark("first_step")

        return FirstStep()

    def summary(self) -> dict:
        phases = ("imports", "checks", "setup", "model", "data", "first_step")
        out = {p: None if self.marks.get(p) is None else round(self.marks[p], 3) for p in phases}
        trained = out["first_step"] is not None
        out["to_first_step"] = round(sum(v for v in out.values() if v is not None), 3) if trained else None
        return out


def what_run(cfg) -> str:
    return f"{cfg.method.name} on {cfg.task.name} with {cfg.model.name}"


def _keep_result(out_dir: Path, key: str, record: dict, keep, checkpoint: Path) -> str:
    """The result line (and the trained weights, as the resume checkpoint: rerunning the same command
    stores the line without training again) beside the run, when the store cannot take it. Returns where."""
    line = json.dumps(record, sort_keys=True)
    where = out_dir / f"result-{key}.json"
    try:
        where.write_text(line + "\n")
        kept = str(where)
    except OSError as err:
        print(f"promptscale: the finished result, not stored ({err}): {line}", file=sys.stderr)
        kept = "the line above (stderr)"
    if keep.trainer is not None:  # the final weights, over an earlier periodic checkpoint
        try:
            keep.trainer.save_checkpoint(checkpoint, weights_only=False)
        except Exception as err:  # noqa: BLE001 - already failing: say what is kept, not a second traceback
            return f"{kept}; the weights could not be kept ({err})"
    if checkpoint.is_file():
        return f"{kept}, the weights in {checkpoint} (the same command stores it without training again)"
    return kept


def _identity(cfg, config: dict, key: str, out_dir: Path) -> dict:
    from promptscale.results import git_commit, library_versions

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
        "libraries": library_versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _failure(cfg, config: dict, key: str, out_dir: Path, err: Exception) -> dict:
    return {"status": "failed", "error": f"{type(err).__name__}: {err}", **_identity(cfg, config, key, out_dir)}


def _store_refusal(cfg, config: dict, out_dir: Path, results_file: Path, secrets, err: Exception) -> None:
    """A sweep's job refused for bad input that only its own data shows (the sweep checked every
    config before starting) leaves a ``failed`` line marked ``refused``, so that the sweep's table
    marks its cell; a single run refused for bad input writes nothing."""
    from promptscale.results import StoreError, append_result, config_hash, redact

    if isinstance(err, StoreError):
        return  # the store itself is what failed
    try:
        line = {**_failure(cfg, config, config_hash(config), out_dir, err), "refused": True}
        append_result(results_file, redact(line, secrets))
    except Exception:  # noqa: BLE001 - the job's one-line error is already out; this line is a courtesy
        pass


def _train(
    cfg: DictConfig,
    data,
    out_dir: Path,
    config: dict,
    key: str,
    secrets=(),
    keep_backbone: bool = False,
    callbacks=(),
    clock: StartupClock | None = None,
) -> dict:
    import lightning as L
    import torch

    # Lightning's rank-zero INFO lines (accelerator summary, product tips) drown the run's own output
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)

    from promptscale.methods import method_class
    from promptscale.models import load_backbone
    from promptscale.results import file_digests
    from promptscale.resume import (
        Interruption,
        Resume,
        SafeCheckpointIO,
        SIGTERMException,
        reset_peak_memory,
        resume_checkpoint_path,
        usable_checkpoint,
    )

    start = time.time()
    clock = clock or StartupClock()
    reset_peak_memory()  # this run's peak, not an earlier job's of this process
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    clock.mark("setup")
    backbone = load_backbone(cfg.model, keep=keep_backbone)
    module = method_class(cfg.method.name)(cfg, backbone)
    # the backbone and the module have read their input files: they must still hold what the hash names
    if (files := input_files(cfg)) and file_digests(files) != config.get("file_digests"):
        named = ", ".join(f"{k}={v}" for k, v in files.items())
        raise ConfigError(
            f"{named}: changed while the run started (its hash names what was there before); run it again"
        )
    data.attach(backbone.tokenizer, cfg.model.family, cfg.method.head)
    clock.mark("model")

    logger = make_logger(cfg, out_dir, config, list(secrets))
    kwargs = trainer_kwargs(cfg)
    checkpoint = resume_checkpoint_path(out_dir, key)
    resume = Resume(checkpoint, cfg.checkpoint_every_n_steps, data, list(secrets), started=start)
    interruption = Interruption()  # Ctrl-C, in fit or in the final evaluation
    trainer = L.Trainer(
        **{k: v for k, v in kwargs.items() if k not in ("callbacks", "plugins")},
        callbacks=[*kwargs.get("callbacks", []), *callbacks, resume, interruption, clock.callback()],
        plugins=[*kwargs.get("plugins", []), SafeCheckpointIO()],
        logger=logger or False,
        default_root_dir=str(out_dir),
    )
    resume_from = usable_checkpoint(checkpoint)
    if resume_from:
        print(f"promptscale: resuming from {resume_from}", flush=True)
    try:
        if module.trained_params:  # tuning-free methods (icl, cot) only evaluate
            trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
        # the final evaluation always covers the whole eval split (data.eval_size subsamples it)
        # (its metrics are logged below at the fit's last step, not at this Trainer's step 0)
        evaluator = L.Trainer(
            **{  # trainer_kwargs anew: a strategy object serves one Trainer
                k: v
                for k, v in trainer_kwargs(cfg).items()
                if k in ("accelerator", "devices", "num_nodes", "strategy", "precision", "enable_progress_bar")
            },
            logger=False,
            default_root_dir=str(out_dir),
            enable_model_summary=False,
            callbacks=[interruption],
        )
        results = evaluator.validate(module, datamodule=data, verbose=False, weights_only=True)
    except BaseException as err:
        if hasattr(logger, "finish"):  # W&B: close this run, so that nothing later logs into it
            logger.finish(exit_code=1)
        # Lightning turns Ctrl-C into "ignore SIGINT, exit 1" (in fit: Resume saw the KeyboardInterrupt)
        if isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and interruption.seen):
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning left it ignored
            kept = (
                f"resume checkpoint at step {resume.saved_step} kept: {checkpoint}; the same command resumes from it"
                if checkpoint.is_file()
                else "no resume checkpoint; the same command starts over"
            )
            raise Interrupted(f"stopped by SIGINT at step {trainer.global_step}; {kept}") from None
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
        "wall_time_s": round(resume.wall_time_s(), 2),  # over every segment of a resumed run
        "peak_memory_bytes": resume.peak_memory_bytes(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "startup_s": clock.summary(),
    }
    from promptscale.predictions import save_run_outputs

    record.update(save_run_outputs(module, cfg, config, data.eval_examples, out_dir, key, secrets))
    if logger is not None:
        summary = ("trained_params", "kept_params", "total_params", "wall_time_s", "peak_memory_bytes", "score")
        logger.log_metrics(
            {**{f"eval/{k}": v for k, v in metrics.items()}, **{k: record[k] for k in summary}},
            step=trainer.global_step,
        )
        if hasattr(logger, "finish"):  # W&B
            logger.finish()
        else:
            logger.save()
    return record


def _scrub_hydra_files(folder: Path, secrets: list[str], overrides=()) -> None:
    """Hydra saves the command line's overrides and the config (``.hydra/*.yaml``, incl.
    ``override_dirname``; ``multirun.yaml``): cut secret values out, and the values of
    secret-named keys among ``overrides`` (``+api_key=…``, ``+db.password=…``) whatever their length."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from promptscale.results import REDACTED, is_secret_name, redact

    swaps = [(secret, REDACTED) for secret in secrets]
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if is_secret_name(override.key_or_group):
            redacted = f"{override.get_key_element()}={REDACTED}"
            swaps += [(override.input_line, redacted), (f"{override.get_key_element()}={override.get_value_element_as_str()}", redacted)]  # fmt: skip
    if not swaps:
        return
    for path in [*folder.glob(".hydra/*.yaml"), folder / "multirun.yaml"]:
        if not path.is_file():
            continue
        text = original = path.read_text()
        for old, new in swaps:
            text = text.replace(old, new)
        if path.name == "config.yaml":  # the composed config: a secret-named key's value, however short
            container = OmegaConf.to_container(OmegaConf.create(text))
            if (scrubbed := redact(container, [])) != container:
                text = OmegaConf.to_yaml(OmegaConf.create(scrubbed))
        if text != original:
            with atomic_path(path) as tmp:
                tmp.write_text(text)


def _remove_hydra_only_dir(out_dir: Path) -> None:
    """Bad input writes nothing: remove the run dir Hydra made for this run (its ``.hydra/`` and
    job log) and its empty parents, unless it holds anything else (an earlier run's files)."""
    import shutil

    out_dir, cwd = Path(out_dir).resolve(), Path.cwd().resolve()
    if not (out_dir / ".hydra").is_dir() or out_dir == cwd or out_dir in cwd.parents:
        return
    for path in out_dir.rglob("*"):
        hydra_file = path.parent == out_dir / ".hydra" or (path.parent == out_dir and path.suffix == ".log")
        if path.is_file() and path.stat().st_size and not hydra_file:
            return
    shutil.rmtree(out_dir, ignore_errors=True)
    for parent in out_dir.parents:  # outputs/<date>/ when nothing else is in them
        if parent == cwd or cwd not in parent.parents:
            break
        with contextlib.suppress(OSError):
            parent.rmdir()


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
    parser = OverridesParser.create()
    for text in given:
        try:
            (override,) = parser.parse_overrides([text])
        except Exception:  # noqa: BLE001 - a value scrubbed of a secret ("<redacted>") is no override syntax: one value
            continue
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
    from promptscale.sweep import check_sources, record_failure, release_memory

    global _task_started
    _task_started = True
    import torch

    torch.set_num_threads(job_threads())
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    out_dir, results_file = hydra_paths(cfg)
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - a bad interpolation is reported by run(); scrub what is there
        config = OmegaConf.to_container(cfg, resolve=False)
    secrets, overrides = secret_values(config=config), list(HydraConfig.get().overrides.task)
    _scrub_hydra_files(out_dir, secrets, overrides)
    if sweeping:
        _scrub_hydra_files(Path(HydraConfig.get().sweep.dir), secrets, overrides)
        print(f"promptscale: {sweep_position(HydraConfig.get())}", flush=True)
    try:
        if sweeping:
            check_sources(HydraConfig.get())
        check_not_overridden(cfg, overrides)
        run(cfg, out_dir, results_file, keep_backbone=sweeping)
    except PromptscaleError as err:
        print(f"promptscale: error: {err}", file=sys.stderr)
        if not sweeping:
            _remove_hydra_only_dir(out_dir)
            sys.exit(2)
        record_failure(HydraConfig.get(), str(err))
        _store_refusal(cfg, config, out_dir, results_file, secrets, err)
    except Preempted as err:
        # the whole process was asked to stop: no further jobs of a sweep either
        print(f"promptscale: preempted: {err}", file=sys.stderr)
        sys.exit(143)
    except (Interrupted, KeyboardInterrupt) as err:  # Ctrl-C: no further jobs of a sweep either
        print(f"promptscale: interrupted: {err or 'stopped by SIGINT before training'}", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        if not sweeping:
            raise
        # one failing job of a sweep is recorded (a failed line) and does not stop the others; the
        # sweep then ends non-zero (SweepCheck.on_multirun_end)
        print(f"promptscale: run failed, recorded as failed: {type(err).__name__}: {err}", file=sys.stderr)
        record_failure(HydraConfig.get(), f"{type(err).__name__}: {err}")
    finally:
        if sweeping:  # the next job of this process starts from the memory the first one had
            release_memory()


def main() -> None:
    """``promptscale-train``: Hydra's own errors (unknown group option, misspelt key, wrong type)
    become one line too (``promptscale: error: …``, exit 1 as Hydra's); HYDRA_FULL_ERROR=1 shows
    them whole."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # so that they reach us instead of being printed by Hydra
    try:
        _hydra_main()
    except (HydraException, OmegaConfBaseException) as err:
        if previous == "1" or _task_started:
            raise
        print(f"promptscale: error: {error_line(err)}", file=sys.stderr)
        sys.exit(1)  # Hydra's own exit status for these; ours (PromptscaleError) exit 2
    finally:  # called in-process (a notebook, a test), the caller's environment is left as it was
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


if __name__ == "__main__":
    main()
