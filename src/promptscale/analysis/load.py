"""The runs of results stores, as the tables and figures need them, and what both share.

Records: one per config hash, the last finished line (re-runs are not counted twice). A failed
line whose config never finished is kept as a failed run, so that its table cell is marked, not
silently absent. Evaluation-only lines (``"kind": "eval"``, ``"of": <trained run's hash>``) are
runs of their own kind: they never share a cell with training runs.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from promptscale.errors import PromptscaleError
from promptscale.results import store_lines

SUPERGLUE = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc")
# methods in the order the papers list them; others follow by name
METHOD_ORDER = ("finetune", "adapter", "lora", "prompt_tuning", "prefix_tuning", "ptuning", "ptuning_v2")
DASH = "–"
# metrics.py's metric names (task YAML ``metrics:``) -> the values each puts into the task score
METRIC_VALUES = {
    "accuracy": ("accuracy",),
    "f1_macro": ("macro-F1",),
    "multirc": ("EM", "F1a"),
    "record": ("F1", "EM"),
    "entity_f1": ("entity F1",),
}


@dataclass(frozen=True)
class Run:
    """One run of a results store (finished or failed), as far as the tables and plots need it."""

    config_hash: str
    task: str
    method: str
    model: str
    model_params: int
    seed: int
    score: float  # nan for a failed run
    status: str = "finished"
    kind: str = "train"  # "eval": an evaluation-only line of a trained run
    split: str = "val"  # the split scored
    metrics: tuple = ()  # the task's metric names (metrics.py), e.g. ("accuracy", "f1_macro")
    task_kind: str = "classification"
    labels: tuple = ()
    train_steps: int | None = None
    train_size: int | None = None  # data.train_size (None: the whole train split)
    eval_size: int | None = None  # data.eval_size / eval_limit (None: the whole eval split)
    trainable_params: int | None = None
    checkpoint_bytes: int | None = None
    method_config: dict = field(default_factory=dict, compare=False, hash=False)
    experiment: str | None = None
    source: str = ""
    predictions: Path | None = None  # the predictions file, resolved
    predictions_sha256: str | None = None
    predictions_n: int | None = None
    # where the task's data comes from (folder, files, reader; or the hub dataset): two task YAMLs
    # that share a name but read different data never share a cell (``_apart_by_data``)
    data_source: str = field(default="", compare=False)
    # the contents' digest of a model read from a local folder (``file_digests["model.path"]``): two
    # checkpoints under one model name never share a cell (``_apart_by_model``)
    model_digest: str = field(default="", compare=False)
    # ((library, version), ...) the run recorded (``results.LIBRARIES``); empty for older lines
    libraries: tuple = field(default=(), compare=False)
    # (key, value) of the method settings that vary among this method's runs; set by ``load``
    settings: tuple = ()
    is_average: bool = False  # a SuperGLUE-average pseudo-run (``superglue_runs``)

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def prompt_length(self) -> int | None:
        return self.method_config.get("prompt_length")

    @property
    def init(self) -> str | None:
        return self.method_config.get("init")

    @property
    def zero_shot(self) -> bool:
        """Nothing trained: in-context learning or chain-of-thought with no shots, PET without tuning."""
        c = self.method_config
        return (self.method in ("icl", "cot") and c.get("shots") == 0) or (
            self.method == "pet" and c.get("tune_lm") is False
        )

    def variant(self, without: str | None = None) -> str:
        """``method`` or ``method (key=value, …)`` with the varying settings (less ``without``);
        an evaluation-only line adds ``[eval]``."""
        shown = [f"{k}={v}" for k, v in self.settings if k != without]
        label = f"{self.method} ({', '.join(shown)})" if shown else self.method
        return f"{label} [eval]" if self.kind == "eval" else label


@dataclass
class Results:
    """The runs read from results stores, with what was left out and why."""

    runs: list[Run]  # finished
    failed: list[Run] = field(default_factory=list)  # config hashes with a failed line and no finished one
    failed_lines: int = 0
    skipped: list[str] = field(default_factory=list)  # unreadable or incomplete lines, named
    merged: int = 0  # runs sharing model, method settings, task, split and seed with another run

    @property
    def failed_runs(self) -> int:
        return len(self.failed)

    def footer(self) -> str:
        lines = []
        if self.failed_lines:
            lines.append(
                f"Failed: {self.failed_lines} failed line{'s' * (self.failed_lines != 1)} "
                f"({self.failed_runs} run{'s' * (self.failed_runs != 1)} with no finished line, "
                "marked in their cells)."
            )
        if self.skipped:
            shown = "; ".join(self.skipped[:5]) + ("; …" if len(self.skipped) > 5 else "")
            lines.append(f"Skipped: {len(self.skipped)} unreadable or incomplete record(s): {shown}.")
        if versions := library_footer(self.runs):
            lines.append(versions)
        if self.merged:
            lines.append(
                f"Note: {self.merged} runs share model, method settings, task, split and seed with another run "
                "(other settings differ); a cell averages them per seed first."
            )
        return "\n".join(lines)


def library_footer(runs: list[Run]) -> str:
    """``Libraries: torch 2.13.0; transformers 5.25.0; …`` when every run recorded the same versions;
    ``Libraries (mixed versions): torch 2.13.0; transformers 5.25.0 (24 runs), not recorded (13 runs)``
    when they differ, each version counted: a table that mixes library versions says so."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for run in runs:
        for name, version in run.libraries:
            counts[name][version] += 1
    if not counts:
        return ""
    parts = []
    for name, seen in counts.items():
        if len(seen) == 1 and seen.total() == len(runs):
            parts.append(f"{name} {next(iter(seen))}")
        else:
            unrecorded = len(runs) - seen.total()
            shown = [f"{v} ({n} run{'s' * (n != 1)})" for v, n in sorted(seen.items(), key=lambda kv: -kv[1])]
            shown += [f"not recorded ({unrecorded} run{'s' * (unrecorded != 1)})"] if unrecorded else []
            parts.append(f"{name} " + ", ".join(shown))
    mixed = any(len(seen) > 1 or seen.total() < len(runs) for seen in counts.values())
    return ("Libraries (mixed versions): " if mixed else "Libraries: ") + "; ".join(parts) + "."


# ---------------------------------------------------------------- reading


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _optional_int(value) -> int | None:
    return int(value) if value is not None else None


def _to_run(record: dict, store: Path, source: str) -> Run:
    """A record -> Run; KeyError/TypeError/ValueError if a needed field is missing."""
    config = record.get("config") or {}
    task_config = config.get("task") or {}
    data = config.get("data") or {}
    method_config = dict(config.get("method") or {})
    method_config.pop("name", None)
    for key, digest in (config.get("file_digests") or {}).items():  # a file read is its contents, not its path
        group, _, name = key.partition(".")
        if group == "method":
            method_config[name] = f"sha256:{digest}"
    params = record.get("model_params") or (config.get("model") or {}).get("params") or record.get("total_params")
    finished = record.get("status") == "finished"
    score = float(record["score"]) if finished else math.nan
    if finished and not math.isfinite(score):
        raise ValueError(f"score {score}")
    predictions = record.get("predictions") if finished else None
    path = None
    if isinstance(predictions, dict) and predictions.get("path"):
        path = Path(predictions["path"])
        path = path if path.is_absolute() else store.parent / path
    eval_size = data.get("eval_limit") if data.get("eval_limit") is not None else data.get("eval_size")
    hub = task_config.get("hub") or {}
    source_of_data = {  # not the data dir itself: data moved to another dir is the same data
        "hub": None if data.get("dir") else f"{hub.get('path')}/{hub.get('name')}",
        "folder": task_config.get("folder"),
        "files": task_config.get("files"),
        "reader": task_config.get("reader"),
    }
    return Run(
        config_hash=str(record["config_hash"]),
        task=str(record["task"]),
        method=str(record["method"]),
        model=str(record["model"]),
        model_params=int(params or 0),
        seed=int(record["seed"]),
        score=score,
        status="finished" if finished else "failed",
        kind="eval" if record.get("kind") == "eval" else "train",
        split=str(data.get("eval_split") or task_config.get("eval_split") or "val"),
        metrics=tuple(task_config.get("metrics") or ()),
        task_kind=str(task_config.get("kind") or "classification"),
        labels=tuple(task_config.get("labels") or ()),
        train_steps=_optional_int(record.get("train_steps")),
        train_size=_optional_int(data.get("train_size")),
        eval_size=_optional_int(eval_size),
        trainable_params=_optional_int(record.get("trained_params", record.get("trainable_params"))),
        checkpoint_bytes=_optional_int(record.get("checkpoint_bytes")),
        method_config=method_config,
        experiment=record.get("experiment") or config.get("experiment"),
        source=source,
        predictions=path,
        predictions_sha256=predictions.get("sha256") if path else None,
        predictions_n=_optional_int(predictions.get("n")) if path else None,
        data_source=json.dumps(source_of_data, sort_keys=True) if task_config else "",
        model_digest=str((config.get("file_digests") or {}).get("model.path") or ""),
        libraries=tuple((str(k), str(v)) for k, v in (record.get("libraries") or {}).items()),
    )


def _lines(path: Path) -> list[tuple[str, dict | None]]:
    """(``file:line``, record or None) per line of the store: the store's one reader, which names
    each unreadable line in a warning."""
    try:
        return list(store_lines(path))
    except OSError as err:
        raise PromptscaleError(f"cannot read results store {path}: {err}") from None


def load(paths=()) -> Results:
    """Read results stores; keep the last finished record per config hash, and a failed run per
    config hash that never finished; name the skipped lines."""
    results = Results(runs=[])
    finished: dict[str, Run] = {}
    failed: dict[str, Run] = {}
    for path in map(Path, paths):
        for source, record in _lines(path):
            if record is None:
                results.skipped.append(f"{source} (not a JSON object)")
                continue
            status = record.get("status")
            if status == "failed":
                results.failed_lines += 1
            elif status != "finished":
                results.skipped.append(f"{source} (status {status!r})")
                continue
            try:
                run = _to_run(record, path, source)
            except (KeyError, TypeError, ValueError) as err:
                if status == "finished":  # a failed line without its config is counted only
                    results.skipped.append(f"{source} (missing or bad {err})")
                continue
            target = finished if run.finished else failed
            # an evaluation line may carry its trained run's hash: it is keyed apart, per split
            key = (run.config_hash, run.kind, run.split if run.kind == "eval" else "")
            target.pop(key, None)  # the last line wins, in its place
            target[key] = run
    # a failed attempt of a cell that has since finished (the data fixed, the sweep re-run) is history;
    # one on a model folder's other contents (a re-trained checkpoint) is its own cell
    done = {_cell(r) for r in finished.values()}
    done_on = {(*_cell(r), r.model_digest) for r in finished.values()}
    failed = {
        k: r
        for k, r in failed.items()
        if ((*_cell(r), r.model_digest) not in done_on if r.model_digest else _cell(r) not in done)
    }
    every = _with_settings(
        _apart_by_model(_apart_by_data(list(finished.values()) + [r for k, r in failed.items() if k not in finished]))
    )
    results.runs = [r for r in every if r.finished]
    results.failed = [r for r in every if not r.finished]
    seen = defaultdict(int)
    for run in results.runs:
        seen[run.model, run.variant(), run.task, run.split, run.seed] += 1
    results.merged = sum(n for n in seen.values() if n > 1)
    return results


def _cell(run: Run) -> tuple:
    """What a table cell's seed stands for: model, method and its settings, task, split, seed."""
    return run.model, run.method, json.dumps(run.method_config, sort_keys=True), run.task, run.split, run.seed


def _apart_by_data(runs: list[Run]) -> list[Run]:
    """Runs of one task name that read different data (two user YAMLs both named ``mine`` with other
    folders, files or readers; the hub's copy and a local one) become separate tasks, ``name
    [folder]`` (or ``name [data 1]``, ... when the folders match), so that no cell averages two
    datasets. The data dir is not part of it: a moved copy of the same data is the same task."""
    sources: dict[str, dict[str, None]] = defaultdict(dict)
    for run in runs:
        if run.data_source:
            sources[run.task][run.data_source] = None
    renamed = {}
    for task, found in sources.items():
        if len(found) < 2:
            continue
        folders = [json.loads(s).get("folder") or "" for s in found]
        distinct = len(set(folders)) == len(folders) and all(folders)
        for i, (source, folder) in enumerate(zip(found, folders), 1):
            renamed[task, source] = f"{task} [{Path(folder).name if distinct else f'data {i}'}]"
    return [replace(r, task=renamed.get((r.task, r.data_source), r.task)) for r in runs]


def _apart_by_model(runs: list[Run]) -> list[Run]:
    """Runs of one model name read from folders of different contents (a checkpoint re-trained in
    place) become separate models, ``name [sha256:<8 hex>]``, so that no cell averages two checkpoints.
    Lines without a digest (stored before digests, refused before reading the folder) keep the name."""
    digests: dict[str, set[str]] = defaultdict(set)
    for run in runs:
        if run.model_digest:
            digests[run.model].add(run.model_digest)
    return [
        replace(r, model=f"{r.model} [sha256:{r.model_digest[:8]}]")
        if r.model_digest and len(digests[r.model]) > 1
        else r
        for r in runs
    ]


def _with_settings(runs: list[Run]) -> list[Run]:
    """Give each run the method settings that take more than one value among its method's runs
    (a key missing from some runs, e.g. one added in a later version, does not count as varying)."""
    values: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    flat = [_flatten(r.method_config) for r in runs]
    for run, f in zip(runs, flat):
        for k, v in f.items():
            values[run.method][k].add(json.dumps(v, sort_keys=True))
    out = []
    for run, f in zip(runs, flat):
        varying = sorted(k for k, vs in values[run.method].items() if len(vs) > 1 and k in f)
        out.append(replace(run, settings=tuple((k, _show(f[k])) for k in varying)))
    return out


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return str(value)


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # sample std; None for n = 1 (not 0: one seed says nothing about spread)
    n: int


def stat(values: list[float]) -> Stat:
    values = list(values)
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


def aggregate(runs: list[Run], key) -> dict:
    """``key(run)`` -> Stat over seeds of the score ×100; runs of one key and seed are averaged first."""
    per_seed: dict = defaultdict(lambda: defaultdict(list))
    for run in runs:
        per_seed[key(run)][run.seed].append(run.score)
    return {k: stat([100 * statistics.fmean(v) for v in seeds.values()]) for k, seeds in per_seed.items()}


def superglue_tasks(runs: list[Run]) -> list[str]:
    return sorted({r.task for r in runs if r.kind == "train"} & set(SUPERGLUE))


def average_label(tasks: list[str]) -> str:
    return "SuperGLUE avg" if set(tasks) == set(SUPERGLUE) else f"avg ({', '.join(tasks)})"


def superglue_runs(runs: list[Run]) -> list[Run]:
    """One pseudo-run per model, method settings and seed that has every SuperGLUE task of the
    data (at least two), from training runs on one split per task: task = the average's label,
    score = the mean of the task scores."""
    runs = [r for r in runs if r.kind == "train"]
    tasks = superglue_tasks(runs)
    splits = {t: {r.split for r in runs if r.task == t} for t in tasks}
    if len(tasks) < 2 or any(len(s) > 1 for s in splits.values()):  # never average across splits
        return []
    groups: dict = defaultdict(lambda: defaultdict(list))
    first: dict = {}
    for run in runs:
        if run.task in tasks:
            key = (run.model, run.variant(), run.seed)
            groups[key][run.task].append(run.score)
            first.setdefault(key, run)
    label = average_label(tasks)
    return [
        replace(first[key], task=label, score=statistics.fmean(statistics.fmean(by_task[t]) for t in tasks),
                is_average=True, trainable_params=None, checkpoint_bytes=None, metrics=(), split="",
                predictions=None)
        for key, by_task in groups.items()
        if all(t in by_task for t in tasks)
    ]  # fmt: skip


# ---------------------------------------------------------------- labels and orders


def metric_label(runs: list[Run]) -> str:
    """What a task's score is, from its metric names: ``accuracy``, ``mean of accuracy and macro-F1``;
    ``score`` where the runs do not say (an average, or records without the task config)."""
    names = {r.metrics for r in runs if r.metrics and not r.is_average}
    if len(names) != 1:
        return "mean task score" if any(r.is_average for r in runs) else "score"
    values = [v for m in next(iter(names)) for v in METRIC_VALUES.get(m, (m,))]
    return values[0] if len(values) == 1 else f"mean of {', '.join(values[:-1])} and {values[-1]}"


def method_key(label: str):
    """Sort key: the papers' method order, then the settings with numbers compared as numbers."""
    method = label.split(" ", 1)[0]
    natural = tuple((0, float(part), "") if part[:1].isdigit() else (1, 0.0, part)
                    for part in re.split(r"(\d+(?:\.\d+)?)", label) if part)  # fmt: skip
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), natural)


def model_order(runs: list[Run]) -> list[str]:
    size = {}
    for r in runs:
        size[r.model] = min(size.get(r.model, r.model_params), r.model_params)
    return sorted(size, key=lambda m: (size[m], m))


def format_params(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"
