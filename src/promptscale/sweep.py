"""Sweeps as a whole: every job's config is checked before the first job starts, and a sweep with
failed jobs ends with one line and a non-zero exit.

Hydra's BasicSweeper only composes each job before launching it (unknown keys, wrong types);
values that need ``validate()`` (a misspelt ``method.init``, a method on the wrong model family)
would fail one job at a time, after others have trained. :class:`SweepCheck` (a Hydra callback,
``hydra.callbacks`` in ``conf/train.yaml``) composes and validates every cell of the grid in
``on_multirun_start``, before the sweeper or a launcher starts, with no model loaded.

An in-process sweep composes each job from the config files when the job starts: a YAML edited
while the sweep runs would make its later jobs other runs than the ones checked (and than the sweep
asked for). ``SweepCheck`` keeps the config files' digests at the start, and each job of the process
is refused (a ``refused`` line naming the files) if the files it loads changed since
(:func:`check_sources`); jobs run by other processes read the digests from the sweep dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from promptscale.files import atomic_path

# jobs of this process's sweep that failed: (overrides, what happened); filled by train._hydra_main
FAILED: dict[str, str] = {}
# the config files' digests when this process's sweep started (config_files), for check_sources; the
# same in the sweep dir for jobs that other processes compose (submitit)
SOURCES: dict[str, str] = {}
SOURCES_FILE = ".promptscale-config-files.json"
# launchers that compose every job's config in the launching process when the sweep starts
COMPOSED_AT_LAUNCH = ("hydra_plugins.hydra_ray_launcher",)


def _roots(sources) -> list:
    """Hydra's config search path (``hydra.runtime.config_sources``) as folders to read, in order:
    ``file://`` folders and ``pkg://`` packages (Traversables); structured configs have no files."""
    import importlib.resources

    roots = []
    for source in sources:
        try:
            if source.schema == "file":
                roots.append(Path(source.path))
            elif source.schema == "pkg":
                roots.append(importlib.resources.files(source.path))
        except (ImportError, TypeError, ValueError):  # Hydra tolerates a search path entry it cannot read
            continue
    return roots


def _digest(roots, name: str) -> str | None:
    """SHA-256 of the file Hydra loads for ``name`` (``<group>/<option>.yaml``): the first root's."""
    for root in roots:
        path = root
        for part in name.split("/"):
            path = path.joinpath(part)
        if path.is_file():
            return hashlib.sha256(path.read_bytes()).hexdigest()
    return None


def config_files(sources) -> dict[str, str]:
    """``<group>/<option>.yaml`` -> SHA-256 of every config file of the search path that Hydra would
    load under that name (the first folder's; hidden folders left out)."""

    def walk(folder, prefix=""):
        for entry in folder.iterdir():
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                yield from walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".yaml"):
                yield f"{prefix}{entry.name}"

    roots = _roots(sources)
    names = {name for root in roots if root.is_dir() for name in walk(root)}
    return {name: digest for name in sorted(names) if (digest := _digest(roots, name))}


def _loaded(hydra_cfg) -> list[str]:
    """The config files this job was composed from (Hydra's defaults list for its overrides: the
    primary config, each group option, configs an experiment includes), Hydra's own groups aside;
    from its group choices where the defaults list cannot be computed here."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    try:
        defaults = (
            GlobalHydra.instance()
            .config_loader()
            .compute_defaults_list(
                hydra_cfg.job.config_name,
                [*hydra_cfg.overrides.hydra, *hydra_cfg.overrides.task],
                RunMode.MULTIRUN,
            )
            .defaults
        )
        paths = [d.config_path for d in defaults if d.config_path]
    except Exception:  # noqa: BLE001 - no Hydra initialized in this process (a launcher's job): the choices
        paths = [hydra_cfg.job.config_name] + [
            f"{group}/{option}" for group, option in hydra_cfg.runtime.choices.items() if isinstance(option, str)
        ]
    names = [
        f"{path.removesuffix('.yaml')}.yaml" for path in paths if path != "hydra" and not path.startswith("hydra/")
    ]
    return list(dict.fromkeys(names))


def check_sources(hydra_cfg) -> None:
    """ConfigError naming the config files this job was composed from that changed since its sweep
    started: the job would not be the run the sweep's check saw. Nothing when the sweep's start left
    no digests, nor for launchers that compose every job when the sweep starts (Ray)."""
    from promptscale.errors import ConfigError

    if str((hydra_cfg.get("launcher") or {}).get("_target_", "")).startswith(COMPOSED_AT_LAUNCH):
        return
    started = SOURCES
    if not started:
        try:
            started = json.loads((Path(hydra_cfg.sweep.dir) / SOURCES_FILE).read_text())
        except (OSError, ValueError):
            return
    loaded = _loaded(hydra_cfg)
    roots = _roots(hydra_cfg.runtime.config_sources)
    changed = [name for name in loaded if _digest(roots, name) != started.get(name)]
    if changed:
        raise ConfigError(
            f"config file(s) changed since the sweep started ({', '.join(changed)}): this run would not be the one "
            "checked; run the sweep again once the edit is done (finished runs are skipped)"
        )


def sweep_cells(params: dict, arguments: list[str], config_loader=None) -> list[list[str]]:
    """Every job's overrides, as Hydra's BasicSweeper forms them: the ``hydra.sweeper.params``
    lists, then the command line's overrides (which replace a param of the same key), crossed."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    overrides = OverridesParser.create(config_loader=config_loader).parse_overrides(given)
    return [cell for batch in BasicSweeper.split_arguments(overrides, None) for cell in batch]


def check_cells(cells: list[list[str]], config_name: str = "train"):
    """Compose and validate every job's config (no data, no model), in order; yields (index, error)
    for each that fails. Needs an initialized Hydra (inside the app, or ``initialize_config_dir``).

    A job's config is composed as Hydra composes it: the defaults list with the job's config-group
    choices, then its value overrides. Jobs that differ only in values (seed, method.init, ...)
    share one composition of their group choices: composing costs ~0.4 s, a value override ~1 ms."""
    import copy

    from hydra import compose
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from promptscale.config import check_not_overridden, validate

    loader = GlobalHydra.instance().config_loader()
    parser = OverridesParser.create(config_loader=loader)
    groups: dict[str, bool] = {}
    composed: dict[tuple, object] = {}
    for i, cell in enumerate(cells):
        try:
            overrides = parser.parse_overrides(list(cell))
            for o in overrides:
                if o.key_or_group not in groups:
                    groups[o.key_or_group] = "/" in o.key_or_group or bool(loader.get_group_options(o.key_or_group))
            choices = tuple(o.input_line for o in overrides if groups[o.key_or_group])
            if choices not in composed:
                composed[choices] = compose(config_name=config_name, overrides=list(choices))
            cfg = copy.deepcopy(composed[choices])
            # Hydra's own step that applies value overrides after the defaults list
            ConfigLoaderImpl._apply_overrides_to_config([o for o in overrides if not groups[o.key_or_group]], cfg)
            check_not_overridden(cfg, cell)
            validate(cfg)
        except Exception as err:  # noqa: BLE001 - PromptscaleError or Hydra/OmegaConf's
            yield i, err


def record_failure(hydra_cfg, message: str) -> None:
    """Called by a sweep's job that failed (in this process)."""
    FAILED[" ".join(hydra_cfg.overrides.task)] = message


def _failed_lines(results_file: Path, sweep_dir: Path, since: float) -> dict[str, str]:
    """output dir -> error of the jobs of this sweep whose last line since ``since`` is a failed one
    (jobs run by other processes: submitit, Ray)."""
    last: dict[str, dict] = {}
    if not results_file.is_file():
        return {}
    for line in results_file.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
            when = time.mktime(time.strptime(record["finished_at"], "%Y-%m-%dT%H:%M:%S%z"))
        except (ValueError, KeyError, TypeError):
            continue
        out = str(record.get("output_dir", ""))
        if when >= since - 1 and Path(out).resolve().parent == sweep_dir:
            last[out] = record
    return {out: str(r.get("error", "")) for out, r in last.items() if r.get("status") == "failed"}


class SweepCheck(Callback):
    def __init__(self) -> None:
        self.cells = 0
        self.start = 0.0

    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs) -> None:
        from hydra.core.global_hydra import GlobalHydra

        from promptscale.train import error_line

        FAILED.clear()
        SOURCES.clear()
        SOURCES.update(config_files(config.hydra.runtime.config_sources))
        self.start = time.time()
        if not str(config.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper"):
            self._keep_sources(config)
            return  # other sweepers (Optuna, Ax) choose their jobs as they go: nothing to list up front
        loader = GlobalHydra.instance().config_loader()
        cells = sweep_cells(config.hydra.sweeper.get("params"), list(config.hydra.overrides.task), loader)
        self.cells = len(cells)
        for i, err in check_cells(cells, config_name or "train"):
            print(
                f"promptscale: error: sweep refused, run {i + 1} of {len(cells)} ({' '.join(cells[i])}): "
                f"{error_line(err)}",
                file=sys.stderr,
            )
            raise SystemExit(2)  # Hydra's callbacks turn an Exception into a warning
        self._keep_sources(config)
        print(f"promptscale: sweep of {len(cells)} runs: every config checked", flush=True)

    @staticmethod
    def _keep_sources(config: DictConfig) -> None:
        """The config files' digests into the sweep dir, for jobs that other processes run."""
        with contextlib.suppress(OSError), atomic_path(Path(config.hydra.sweep.dir) / SOURCES_FILE) as tmp:
            tmp.write_text(json.dumps(SOURCES))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        SOURCES.clear()
        sweep_dir = Path(config.hydra.sweep.dir)
        results_file = sweep_dir / config.results_file
        # jobs run here report to FAILED; jobs of other processes (submitit, Ray) leave failed lines
        failed = dict(FAILED) or _failed_lines(results_file, sweep_dir.resolve(), self.start)
        if not failed:
            return
        shown = "; ".join(list(failed)[:3]) + ("; …" if len(failed) > 3 else "")
        print(
            f"promptscale: error: {len(failed)} of {self.cells} sweep runs failed ({shown}); "
            f"their failed lines are in {results_file} (bad input: marked refused), their errors above",
            file=sys.stderr,
        )
        raise SystemExit(1)


def release_memory() -> None:
    """After an in-process sweep job: collect the job's reference cycles (Trainer <-> module,
    W&B run) and hand freed heap back to the OS. glibc keeps freed blocks of the many per-thread
    arenas mapped, so without ``malloc_trim`` the RSS of a sweep of SmolLM2-135M jobs wanders up
    by a model copy at a time although nothing of the finished job is alive."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    libc = ctypes.util.find_library("c")
    if libc:
        trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)  # glibc only
        if trim is not None:
            trim(0)
