"""``promptscale table``: results stores (and W&B runs) -> tables and plots.

Tables: rows are methods (with the method settings that vary among a method's runs, e.g.
``prompt_tuning (prompt_length=20)``), columns tasks (one table per model) or model sizes (one
table per task); a cell is the mean ± sample std over seeds of the task score ×100, with n. Each
table also has the SuperGLUE average (where every SuperGLUE task in the data is there for a seed),
the trainable parameters and the checkpoint size of each method. Written as Markdown, CSV and
LaTeX; the plots are :mod:`promptscale.plots`.

Records: one per config hash, the last finished line (re-runs are not counted twice); failed
lines are left out and counted. W&B runs (``--wandb DIR``) are read from their offline folders
and give way to a results store's line of the same config hash.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
import struct
import sys
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from promptscale.results import store_lines

SUPERGLUE = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc")
COLUMNS = ("task", "model")
# methods in the order the papers list them; others follow by name
METHOD_ORDER = ("finetune", "adapter", "lora", "prompt_tuning", "prefix_tuning", "ptuning", "ptuning_v2")
DASH = "–"


@dataclass(frozen=True)
class Run:
    """One finished run, as far as the tables and plots need it."""

    config_hash: str
    task: str
    method: str
    model: str
    model_params: int
    seed: int
    score: float
    trainable_params: int | None = None
    checkpoint_bytes: int | None = None
    method_config: dict = field(default_factory=dict, compare=False, hash=False)
    experiment: str | None = None
    source: str = ""
    # (key, value) of the method settings that vary among this method's runs; set by ``load``
    settings: tuple = ()
    is_average: bool = False  # a SuperGLUE-average pseudo-run (``superglue_runs``)

    @property
    def prompt_length(self) -> int | None:
        return self.method_config.get("prompt_length")

    @property
    def init(self) -> str | None:
        return self.method_config.get("init")

    def variant(self, without: str | None = None) -> str:
        """``method`` or ``method (key=value, …)`` with the varying settings (less ``without``)."""
        shown = [f"{k}={v}" for k, v in self.settings if k != without]
        return f"{self.method} ({', '.join(shown)})" if shown else self.method


@dataclass
class Results:
    """The runs read from results stores and W&B folders, with what was left out and why."""

    runs: list[Run]
    failed_lines: int = 0
    failed_runs: int = 0  # config hashes with a failed line and no finished one
    skipped: list[str] = field(default_factory=list)  # unreadable or incomplete lines, named
    merged: int = 0  # runs sharing model, method settings, task and seed with another run

    def footer(self) -> str:
        lines = []
        if self.failed_lines:
            lines.append(
                f"Failed: {self.failed_lines} failed line{'s' * (self.failed_lines != 1)} ignored "
                f"({self.failed_runs} run{'s' * (self.failed_runs != 1)} with no finished line)."
            )
        if self.skipped:
            shown = "; ".join(self.skipped[:5]) + ("; …" if len(self.skipped) > 5 else "")
            lines.append(f"Skipped: {len(self.skipped)} unreadable or incomplete record(s): {shown}.")
        if self.merged:
            lines.append(
                f"Note: {self.merged} runs share model, method settings, task and seed with another run "
                "(other settings differ); a cell averages them per seed first."
            )
        return "\n".join(lines)


# ---------------------------------------------------------------- reading


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _to_run(record: dict, source: str) -> Run:
    """A finished record -> Run; KeyError/TypeError/ValueError if a needed field is missing."""
    config = record.get("config") or {}
    method_config = dict(config.get("method") or {})
    method_config.pop("name", None)
    params = record.get("model_params") or (config.get("model") or {}).get("params") or record.get("total_params")
    checkpoint = record.get("checkpoint_bytes")
    trainable = record.get("trained_params", record.get("trainable_params"))  # trainable_params: older lines
    score = float(record["score"])
    if not math.isfinite(score):
        raise ValueError(f"score {score}")
    return Run(
        config_hash=str(record["config_hash"]),
        task=str(record["task"]),
        method=str(record["method"]),
        model=str(record["model"]),
        model_params=int(params or 0),
        seed=int(record["seed"]),
        score=score,
        trainable_params=int(trainable) if trainable is not None else None,
        checkpoint_bytes=int(checkpoint) if checkpoint is not None else None,
        method_config=method_config,
        experiment=record.get("experiment") or config.get("experiment"),
        source=source,
    )


def load(paths=(), wandb_dirs=()) -> Results:
    """Read results stores and W&B run folders; keep the last finished record per config hash
    (W&B runs first, so a store's line wins), count failed lines, name skipped ones."""
    sources = [item for d in wandb_dirs for item in read_wandb_runs(Path(d))]
    sources += [item for p in paths for item in store_lines(Path(p))]  # one warning per bad line
    results = Results(runs=[])
    finished: dict[str, Run] = {}
    failed: set[str] = set()
    for source, record in sources:
        status = record.get("status") if record is not None else None
        if status == "failed":
            results.failed_lines += 1
            failed.add(str(record.get("config_hash")))
            continue
        if status != "finished":
            results.skipped.append(f"{source} ({'not a JSON object' if record is None else f'status {status!r}'})")
            continue
        try:
            run = _to_run(record, source)
        except (KeyError, TypeError, ValueError) as err:
            results.skipped.append(f"{source} (missing or bad {err})")
            continue
        finished.pop(run.config_hash, None)  # the last line wins, in its place
        finished[run.config_hash] = run
    results.failed_runs = len(failed - set(finished))
    results.runs = _with_settings(list(finished.values()))
    seen = defaultdict(int)
    for run in results.runs:
        seen[run.model, run.variant(), run.task, run.seed] += 1
    results.merged = sum(n for n in seen.values() if n > 1)
    return results


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


# ---------------------------------------------------------------- W&B runs


def read_wandb_runs(root: Path) -> list[tuple[str, dict]]:
    """(source, record) for each W&B run folder under ``root`` (``offline-run-*`` or ``run-*``)
    that comes from ``promptscale-train``: its config names task, method and model. A run with
    ``files/wandb-summary.json`` and ``files/config.yaml`` is read from them; otherwise from its
    ``run-*.wandb`` log (offline runs of wandb >= 0.19 write only that). A run without a final
    ``score`` in its summary is returned with status ``incomplete``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"W&B folder not found: {root}")
    folders = {p.parent.parent.resolve() for p in root.rglob("files/wandb-summary.json")}
    folders |= {p.parent.resolve() for p in root.rglob("run-*.wandb")}
    out = []
    for folder in sorted(folders):
        try:
            config, summary = _read_wandb_folder(folder)
        except Exception as err:  # noqa: BLE001 - one unreadable run must not cost the table
            out.append((str(folder), {"status": f"unreadable: {type(err).__name__}: {err}"}))
            continue
        record = _wandb_record(config, summary)
        if record is not None:
            out.append((str(folder), record))
    return out


def _read_wandb_folder(folder: Path) -> tuple[dict, dict]:
    summary_file, config_file = folder / "files" / "wandb-summary.json", folder / "files" / "config.yaml"
    if summary_file.is_file() and config_file.is_file():
        import yaml

        config = yaml.safe_load(config_file.read_text()) or {}
        # config.yaml wraps each top-level value: {key: {value: ..., desc: ...}}
        config = {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in config.items()}
        return config, json.loads(summary_file.read_text())
    logs = sorted(folder.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"no run-*.wandb or files/wandb-summary.json in {folder}")
    return _read_wandb_log(logs[-1])


def _wandb_log_records(path: Path):
    """The protobuf records of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then
    LevelDB-log style blocks of 32 KiB, each record chunk with a 7-byte header (crc32, length, type:
    1 full, 2 first, 3 middle, 4 last)."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path.name} is not a W&B log")
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's trailer too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def _apply(target: dict, items, remove=()) -> None:
    for item in items:
        keys = list(item.nested_key) or [item.key]
        node = target
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = json.loads(item.value_json)
    for item in remove:
        keys = list(item.nested_key) or [item.key]
        node = target
        for k in keys[:-1]:
            node = node.get(k, {})
        node.pop(keys[-1], None)


def _read_wandb_log(path: Path) -> tuple[dict, dict]:
    from wandb.proto import wandb_internal_pb2 as pb

    config: dict = {}
    summary: dict = {}
    for raw in _wandb_log_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            _apply(config, record.run.config.update, record.run.config.remove)
            _apply(summary, record.run.summary.update, record.run.summary.remove)
        elif kind == "config":
            _apply(config, record.config.update, record.config.remove)
        elif kind == "summary":
            _apply(summary, record.summary.update, record.summary.remove)
    return config, summary


def _wandb_record(config: dict, summary: dict) -> dict | None:
    """A results-store-like record from a W&B run's config and summary; None if it is not a
    ``promptscale-train`` run."""
    from promptscale.results import config_hash

    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "wandb_version"}
    try:
        names = {k: config[k]["name"] for k in ("task", "method", "model")}
        seed = config["seed"]
    except (KeyError, TypeError):
        return None
    record = {
        "config_hash": config_hash(config),
        "config": config,
        **names,
        "seed": seed,
        "experiment": config.get("experiment"),
    }
    if "score" not in summary:
        return {**record, "status": "incomplete"}
    record.update(
        status="finished",
        metrics={k.removeprefix("eval/"): v for k, v in summary.items() if k.startswith("eval/")},
        model_params=(config.get("model") or {}).get("params") or summary.get("total_params"),
        **{k: summary[k] for k in ("score", "trained_params", "kept_params", "trainable_params", "total_params", "wall_time_s",
                                   "peak_memory_bytes", "checkpoint_bytes") if k in summary},
    )  # fmt: skip
    return record


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample std; 0 for n = 1
    n: int


def stat(values: list[float]) -> Stat:
    values = list(values)
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


def aggregate(runs: list[Run], key) -> dict:
    """``key(run)`` -> Stat over seeds of the score ×100; runs of one key and seed are averaged first."""
    per_seed: dict = defaultdict(lambda: defaultdict(list))
    for run in runs:
        per_seed[key(run)][run.seed].append(run.score)
    return {k: stat([100 * statistics.fmean(v) for v in seeds.values()]) for k, seeds in per_seed.items()}


def superglue_tasks(runs: list[Run]) -> list[str]:
    return sorted({r.task for r in runs} & set(SUPERGLUE))


def average_label(tasks: list[str]) -> str:
    return "SuperGLUE avg" if set(tasks) == set(SUPERGLUE) else f"avg ({', '.join(tasks)})"


def superglue_runs(runs: list[Run]) -> list[Run]:
    """One pseudo-run per model, method settings and seed that has every SuperGLUE task of the
    data (at least two): task = the average's label, score = the mean of the task scores."""
    tasks = superglue_tasks(runs)
    if len(tasks) < 2:
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
                is_average=True, trainable_params=None, checkpoint_bytes=None)
        for key, by_task in groups.items()
        if all(t in by_task for t in tasks)
    ]  # fmt: skip


# ---------------------------------------------------------------- tables


@dataclass
class Table:
    name: str  # file stem
    title: str
    header: list[str]
    rows: list[list[str]]
    cells: list[tuple[str, str, Stat]]  # (row, column, stat), for the long-form CSV


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


def format_cell(s: Stat | None) -> str:
    if s is None:
        return DASH
    return f"{s.mean:.1f} ± {s.std:.1f} (n={s.n})" if s.n > 1 else f"{s.mean:.1f} (n=1)"


def format_params(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _span(values: list, fmt) -> str:
    values = sorted({v for v in values if v is not None})
    if not values:
        return DASH
    return fmt(values[0]) if len(values) == 1 else f"{fmt(values[0])}–{fmt(values[-1])}"


def build_tables(runs: list[Run], columns: str = "task") -> list[Table]:
    """One table per model (``columns="task"``) or per task and the SuperGLUE average
    (``columns="model"``); rows method variants; trainable-parameter and checkpoint-size columns
    (a range where they vary: task heads, model sizes)."""
    if columns not in COLUMNS:
        raise ValueError(f"columns must be one of {COLUMNS}, got {columns!r}")
    averages = superglue_runs(runs)
    everything = runs + averages
    models = model_order(runs)
    params = {m: min(r.model_params for r in runs if r.model == m) for m in models}
    tables = []
    if columns == "task":
        tasks = sorted({r.task for r in runs})
        for model in models:
            mine = [r for r in everything if r.model == model]
            cols = [t for t in tasks if any(r.task == t for r in mine)]
            cols += sorted({r.task for r in mine if r.is_average})  # the average, if any
            title = f"{model} ({format_params(params[model])} parameters)" if params[model] else model
            tables.append(_table(model, title, mine, cols, lambda r: r.task))
    else:
        tasks = sorted({r.task for r in runs}) + sorted({r.task for r in averages})
        for task in tasks:
            mine = [r for r in everything if r.task == task]
            cols = [m for m in models if any(r.model == m for r in mine)]
            name = "superglue_avg" if task in {r.task for r in averages} else task
            shared = [r for r in runs if r.task in superglue_tasks(runs)] if name == "superglue_avg" else mine
            tables.append(_table(name, task, mine, cols, lambda r: r.model, shared))
    return tables


def _table(name: str, title: str, runs: list[Run], cols: list[str], column_of, span_runs=None) -> Table:
    stats = aggregate(runs, lambda r: (r.variant(), column_of(r)))
    variants = sorted({r.variant() for r in runs}, key=method_key)
    header = ["method", *cols, "trainable params", "checkpoint"]
    rows, cells = [header], []
    real = [r for r in (runs if span_runs is None else span_runs) if not r.is_average]
    for v in variants:
        mine = [r for r in real if r.variant() == v]
        row = [v]
        for c in cols:
            s = stats.get((v, c))
            row.append(format_cell(s))
            if s is not None:
                cells.append((v, c, s))
        row.append(_span([r.trainable_params for r in mine], lambda n: f"{n:,}"))
        row.append(_span([r.checkpoint_bytes for r in mine], format_bytes))
        rows.append(row)
    return Table(name=name, title=title, header=header, rows=rows[1:], cells=cells)


# ---------------------------------------------------------------- formats


def to_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(r) + " |" for r in table.rows]
    return "\n".join(lines)


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([table.header, *table.rows])
    return buf.getvalue()


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "±": r"$\pm$", "–": "--"}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs ``tabular`` (``\\usepackage{booktabs}``), for ``\\input`` into a table."""
    lines = [
        f"% {latex_escape(table.title)}: score x100, mean $\\pm$ std over seeds (n)",
        r"\begin{tabular}{l" + "r" * (len(table.header) - 1) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.header) + r" \\",
        r"\midrule",
        *(" & ".join(latex_escape(c) for c in row) + r" \\" for row in table.rows),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    return "\n".join(lines) + "\n"


def markdown(tables: list[Table], results: Results) -> str:
    parts = [f"### {t.title}\n\n{to_markdown(t)}\n" for t in tables]
    text = "\n".join(parts) or "(no finished runs)\n"
    footer = results.footer()
    return text + (f"\n{footer}\n" if footer else "")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_") or "table"


def write(tables: list[Table], results: Results, out: Path, plots: bool = True) -> list[Path]:
    """``table.md`` (all tables and the footer), ``<table>.csv`` and ``<table>.tex`` each,
    ``cells.csv`` (long form: table, row, column, mean, std, n) and the plots that the data
    allows (:func:`promptscale.plots.draw_all`). Returns the files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "table.md"]
    written[0].write_text(markdown(tables, results))
    for t in tables:
        (out / f"{_slug(t.name)}.csv").write_text(to_csv(t))
        (out / f"{_slug(t.name)}.tex").write_text(to_latex(t))
        written += [out / f"{_slug(t.name)}.csv", out / f"{_slug(t.name)}.tex"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["table", "row", "column", "mean", "std", "n"])
    writer.writerows([t.name, r, c, f"{s.mean:.4f}", f"{s.std:.4f}", s.n] for t in tables for r, c, s in t.cells)
    (out / "cells.csv").write_text(buf.getvalue())
    written.append(out / "cells.csv")
    if plots:
        from promptscale.plots import draw_all

        written += draw_all(results.runs, out)
    return written


def log_to_wandb(tables: list[Table], results: Results, project: str, group: str | None, save_dir: Path) -> str:
    """Log the tables (one ``wandb.Table`` each, plus the long-form cells) into a new W&B run of
    job type ``table`` in ``group`` (default: the runs' experiment). Offline unless WANDB_MODE
    says otherwise. Returns the run's local folder."""
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    experiments = sorted({r.experiment for r in results.runs if r.experiment})
    group = group or (experiments[0] if len(experiments) == 1 else None)
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project,
        group=group,
        job_type="table",
        tags=["table"],
        dir=str(save_dir),
        mode=os.environ.get("WANDB_MODE") or "offline",
        config={"experiments": experiments, "runs": len(results.runs), "failed_lines": results.failed_lines},
    )
    try:
        data = {f"table/{t.name}": wandb.Table(columns=t.header, data=t.rows) for t in tables}
        data["cells"] = wandb.Table(
            columns=["table", "row", "column", "mean", "std", "n"],
            data=[[t.name, r, c, s.mean, s.std, s.n] for t in tables for r, c, s in t.cells],
        )
        run.log(data)
        return str(Path(run.dir).parent)
    finally:
        run.finish()


def render(paths, out: Path | None = None, *, columns: str = "task", wandb_dirs=(), plots: bool = True) -> str:
    """The Markdown tables of the stores (and W&B folders); with ``out``, also write every file."""
    results = load(paths, wandb_dirs)
    tables = build_tables(results.runs, columns)
    if out is not None:
        write(tables, results, Path(out), plots=plots)
    return markdown(tables, results)


def main_table(args) -> None:
    """``promptscale table`` with parsed arguments (see ``promptscale.cli``)."""
    results = load(args.results, args.wandb or ())
    tables = build_tables(results.runs, args.columns)
    print(markdown(tables, results), end="")
    if args.out is not None:
        written = write(tables, results, args.out, plots=not args.no_plots)
        pngs = [p.name for p in written if p.suffix == ".png"]
        plots = f"plots {', '.join(pngs)}" if pngs else "no plots (no variation in model size, prompt length or init)"
        print(
            f"promptscale: wrote table.md, cells.csv, {len(tables)} table(s) as CSV and LaTeX, "
            f"{'no plots (--no-plots)' if args.no_plots else plots} -> {args.out}",
            file=sys.stderr,
        )
    if args.wandb_log:
        folder = log_to_wandb(tables, results, args.project, args.group, args.out or Path("."))
        print(f"promptscale: logged the tables to W&B run {folder}", file=sys.stderr)
