"""Experiment tracking for a run: W&B (offline by default) or CSV through Lightning's loggers,
guarded so that tracking never costs a run (a failure is said once, the run goes on and its result
still reaches the local results store), with secrets cut out of everything W&B records and one W&B
run per config and run dir (a resumed job continues its run)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


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

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # Lightning passes anonymous=None to wandb.init, which wandb 0.31 answers with a deprecation notice
            # on every run ("The anonymous setting has no effect"); not passing it is what wandb asks for.
            self._wandb_init.pop("anonymous", None)

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
            swept, sweep_dir = _sweep_of_this_job()
            offline = cfg.logger.mode == "offline"
            run_id = wandb_run_id(config, out_dir)
            if offline:
                _supersede_offline_runs(out_dir, run_id)
            logger = GuardedWandbLogger(
                project=cfg.logger.project,
                save_dir=str(out_dir),
                offline=offline,
                **({"mode": "disabled"} if cfg.logger.mode == "disabled" else {}),
                # a resumed job (same config, same run dir) continues its W&B run
                id=run_id,
                resume="allow",
                name=redact(",".join(f"{k}={v}" for k, v in swept.items()), secrets) or None,
                group=redact(cfg.logger.group or cfg.experiment or sweep_dir, secrets),
                tags=redact(
                    [
                        *cfg.logger.tags,
                        cfg.method.name,
                        cfg.model.name,
                        cfg.task.name,
                        *(f"{k}={v}" for k, v in swept.items()),
                    ],
                    secrets,
                ),
                config=redact({**config, "swept": swept} if swept else config, secrets),
            )
            with _redacted_argv(secrets):
                _ = logger.experiment  # start now, so a failure is caught here and not mid-training
            return logger
        except Exception as err:  # noqa: BLE001 - tracking must never cost a run
            _say_tracking_failed(f"could not start; logging to CSV in {out_dir} instead", err)
    return CSVLogger(str(out_dir), name="csv")


def wandb_run_id(config: dict, out_dir: Path) -> str:
    """The W&B run id of a config in a run dir: the same when a job is resumed (or requeued), so
    that it continues its W&B run instead of leaving a crashed one beside a new one."""
    import hashlib

    from promptscale.results import config_hash

    return hashlib.sha256(f"{config_hash(config)}:{Path(out_dir).resolve()}".encode()).hexdigest()[:16]


def _supersede_offline_runs(out_dir: Path, run_id: str) -> None:
    """wandb (0.31) cannot resume an offline run: a resumed job writes a new offline folder with
    the same id, and ``wandb sync`` of both would give one run per folder. Move the earlier
    attempts' folders to ``wandb/superseded/`` (kept, out of the sync glob) so that one run per
    config is synced; online runs resume in place."""
    root = Path(out_dir) / "wandb"
    earlier = sorted(root.glob(f"offline-run-*-{run_id}"))
    if earlier:
        (root / "superseded").mkdir(parents=True, exist_ok=True)
        for folder in earlier:
            os.replace(folder, root / "superseded" / folder.name)


def _sweep_of_this_job() -> tuple[dict[str, str], str | None]:
    """In a Hydra multirun job: the swept keys' values of this job ({} when nothing is swept or
    outside a sweep) and the sweep dir's name (the default W&B group)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}, None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = HydraConfig.get()
    parser = OverridesParser.create()
    given = [f"{key}={value}" for key, value in (hydra_cfg.sweeper.get("params") or {}).items()]
    given += [arg for arg in sys.argv[1:] if "=" in arg and not arg.startswith("-")]
    swept_keys = {o.key_or_group for o in parser.parse_overrides(given) if o.is_sweep_override()}
    job = parser.parse_overrides(list(hydra_cfg.overrides.task))
    swept = {o.key_or_group: o.value() for o in job if o.key_or_group in swept_keys}
    return {k: str(v) for k, v in swept.items()}, Path(hydra_cfg.sweep.dir).name
