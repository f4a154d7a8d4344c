"""``promptscale table``: results stores -> tables (Markdown, CSV, LaTeX), significance, figures.

Rows are methods (with the method settings that vary among a method's runs, e.g.
``prompt_tuning (prompt_length=20)``); columns tasks on one eval split (one table per model) or
model sizes (one table per task). A cell is the mean ± sample std over seeds of the task score
×100, with n. Where the runs wrote predictions files, the tables also get reference rows (the
majority class of the eval set, and the zero-shot runs, first), an ``ensemble of N seeds`` row
after each method with several seeds, and a paired-bootstrap p-value of each cell against the
baseline row's cell (:mod:`.significance`). Failed runs are marked in their cells. Each table has
a caption: the metric, split and sizes of each column.

Why one module of this size: the cells, the reference rows and the three renderings share one
row/column model; the loading (:mod:`.load`), statistics (:mod:`.significance`, :mod:`.scoring`)
and figures (:mod:`.plots`) are their own modules.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from promptscale.analysis.load import (
    DASH,
    Results,
    Run,
    Stat,
    aggregate,
    format_params,
    load,
    method_key,
    metric_label,
    model_order,
    superglue_runs,
    superglue_tasks,
)
from promptscale.analysis.predictions import Examples, PredictionsError, ensemble, majority, read_predictions
from promptscale.analysis.significance import Bootstrap

COLUMNS = ("task", "model")
MAJORITY = "majority class"
MARKS = ((0.01, "‡"), (0.05, "†"))  # the marker of the smallest threshold the p-value is under
SCORE_TOLERANCE = 1e-3  # predictions whose recomputed score differs more from the line's are not used


@dataclass
class Cell:
    row: str
    column: str
    stat: Stat | None
    kind: str = "method"  # majority | zero_shot | method | ensemble | eval
    failed: int = 0  # failed runs (seeds) of this cell with no finished line
    delta: float | None = None  # row − baseline ×100, from the predictions
    p_value: float | None = None

    def text(self) -> str:
        if self.stat is None:
            return f"failed ({self.failed})" if self.failed else DASH
        s = self.stat
        if self.kind == "ensemble":
            text = f"{s.mean:.1f} (ens. of {s.n})"
        elif self.kind == "majority":
            text = f"{s.mean:.1f}"
        else:
            text = f"{s.mean:.1f} ± {s.std:.1f} (n={s.n})" if s.n > 1 else f"{s.mean:.1f} (n=1)"
        if self.failed:
            text += f" +{self.failed} failed"
        mark = next((m for threshold, m in MARKS if self.p_value is not None and self.p_value < threshold), "")
        return f"{text} {mark}" if mark else text


@dataclass
class Table:
    name: str  # file stem
    title: str
    header: list[str]
    rows: list[list[str]]
    cells: list[Cell]
    caption: str = ""
    metric: dict = field(default_factory=dict)  # column -> metric label
    split: dict = field(default_factory=dict)  # column -> split


# ---------------------------------------------------------------- predictions


class Predictions:
    """Each run's predictions, read once and checked against its line's score; problems are noted."""

    def __init__(self) -> None:
        self._examples: dict[str, Examples | None] = {}
        self.notes: list[str] = []

    def of(self, run: Run) -> Examples | None:
        if run.config_hash in self._examples:
            return self._examples[run.config_hash]
        examples = None
        if run.predictions is not None:
            from promptscale.analysis.scoring import Scorer  # torch: only where there are predictions

            try:
                examples = read_predictions(run.predictions, run.predictions_sha256, run.predictions_n)
                score = Scorer(run.metrics, run.labels).score(examples)
                if abs(score - run.score) > SCORE_TOLERANCE:
                    raise PredictionsError(
                        f"{run.predictions}: scores {score:.4f}, its results line says {run.score:.4f}"
                    )
            except (PredictionsError, ValueError, RuntimeError) as err:
                self.notes.append(f"predictions of {run.source} not used: {err}")
                examples = None
        self._examples[run.config_hash] = examples
        return examples


def _members(runs: list[Run], predictions: Predictions) -> list[Examples] | None:
    """The predictions of every run of a cell, or None if one of them has none."""
    members = [predictions.of(r) for r in runs]
    return members if members and all(m is not None for m in members) else None


# ---------------------------------------------------------------- tables


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


def build_tables(
    results: Results, columns: str = "task", baseline: str = "finetune", resamples: int = 1000
) -> list[Table]:
    """One table per model (``columns="task"``: a column per task and eval split, and the
    SuperGLUE average) or per task and split (``columns="model"``); rows method variants, the
    reference rows and the ensembles; trainable-parameter, checkpoint-size and step columns (a
    range where they vary). ``resamples=0``: no p-values."""
    if columns not in COLUMNS:
        raise ValueError(f"columns must be one of {COLUMNS}, got {columns!r}")
    runs, failed = results.runs, results.failed
    averages = superglue_runs(runs)
    models = model_order(runs + failed)
    params = {m: min(r.model_params for r in runs + failed if r.model == m) for m in models}
    predictions = Predictions()
    builder = _Builder(predictions, baseline, resamples)
    tables = []
    if columns == "task":
        for model in models:
            mine = [r for r in runs + averages if r.model == model]
            lost = [r for r in failed if r.model == model]
            pairs = sorted({(r.task, r.split) for r in mine + lost if not r.is_average})
            split_shown = {t for t, _ in pairs if sum(p[0] == t for p in pairs) > 1}
            label = {p: f"{p[0]} ({p[1]})" if p[0] in split_shown else p[0] for p in pairs}
            label.update({(t, ""): t for t in sorted({r.task for r in mine if r.is_average})})
            title = f"{model} ({format_params(params[model])} parameters)" if params[model] else model
            tables.append(
                builder.table(
                    model, title, mine, lost, lambda r, label=label: label[r.task, r.split], list(label.values())
                )
            )
    else:
        pairs = sorted({(r.task, r.split) for r in runs + failed})
        split_shown = {t for t, _ in pairs if sum(p[0] == t for p in pairs) > 1}
        for task, split in pairs:
            mine = [r for r in runs if (r.task, r.split) == (task, split)]
            lost = [r for r in failed if (r.task, r.split) == (task, split)]
            cols = [m for m in models if any(r.model == m for r in mine + lost)]
            name = f"{task}_{split}" if task in split_shown else task
            title = f"{task} ({split})" if task in split_shown else task
            tables.append(builder.table(name, title, mine, lost, lambda r: r.model, cols))
        for label in sorted({r.task for r in averages}):
            mine = [r for r in averages if r.task == label]
            cols = [m for m in models if any(r.model == m for r in mine)]
            shared = [r for r in runs if r.task in superglue_tasks(runs)]
            tables.append(builder.table("superglue_avg", label, mine, [], lambda r: r.model, cols, span_runs=shared))
    for t in tables:
        notes = builder.notes.pop(t.name, [])
        t.caption += "".join(f"\n{n}" for n in notes)
    if predictions.notes:
        results.skipped += predictions.notes
    return tables


class _Builder:
    def __init__(self, predictions: Predictions, baseline: str, resamples: int) -> None:
        self.predictions, self.baseline, self.resamples = predictions, baseline, resamples
        self.notes: dict[str, list[str]] = defaultdict(list)

    def _baseline_row(self, name: str, method_rows: dict[str, list[Run]]) -> str | None:
        if self.baseline in method_rows or self.baseline == MAJORITY:
            return self.baseline
        if self.baseline.removeprefix("zero-shot: ") in method_rows:
            return self.baseline.removeprefix("zero-shot: ")
        # a training row of that method; in a table of evaluation-only rows, an evaluation row
        candidates = [v for v, rs in method_rows.items() if rs[0].method == self.baseline and rs[0].kind == "train"]
        if not any(rs[0].kind == "train" for rs in method_rows.values()):
            candidates = [v for v, rs in method_rows.items() if rs[0].method == self.baseline]
        if len(candidates) > 1:
            self.notes[name].append(
                f"No p-values: baseline {self.baseline!r} is several rows ({'; '.join(candidates)}); "
                "name one with --baseline."
            )
        return candidates[0] if len(candidates) == 1 else None

    def table(self, name, title, runs, lost, column_of, cols, span_runs=None) -> Table:
        by_row: dict[str, list[Run]] = defaultdict(list)
        for r in runs + lost:
            by_row[r.variant()].append(r)
        stats = aggregate([r for r in runs], lambda r: (r.variant(), column_of(r)))
        failed_count: dict = defaultdict(set)
        for r in lost:
            failed_count[r.variant(), column_of(r)].add(r.seed)
        finished_seeds = defaultdict(set)
        for r in runs:
            finished_seeds[r.variant(), column_of(r)].add(r.seed)
        base = self._baseline_row(name, by_row)

        cells: dict[tuple[str, str], Cell] = {}
        zero = sorted((v for v, rs in by_row.items() if rs[0].zero_shot and rs[0].kind == "train"), key=method_key)
        evals = sorted((v for v, rs in by_row.items() if rs[0].kind == "eval"), key=method_key)
        methods = sorted((v for v in by_row if v not in zero and v not in evals), key=method_key)
        order: list[tuple[str, str]] = []  # (label, kind)
        # runs per (row label, column): the members of significance tests
        members: dict[tuple[str, str], list[Examples] | None] = {}
        for v in by_row:
            kind = "zero_shot" if v in zero else "eval" if v in evals else "method"
            label = f"zero-shot: {v}" if kind == "zero_shot" else v
            for c in cols:
                s = stats.get((v, c))
                n_failed = len(failed_count[v, c] - finished_seeds[v, c])
                if s is not None or n_failed:
                    cells[label, c] = Cell(label, c, s, kind, n_failed)
                    mine = [r for r in runs if r.variant() == v and column_of(r) == c and not r.is_average]
                    members[label, c] = _members(mine, self.predictions) if mine else None

        # reference rows from predictions: the majority class and the seed ensembles
        majority_cells = {}
        if any(members.values()):
            from promptscale.analysis.scoring import Scorer  # torch: only where there are predictions
        for c in cols:
            examples = next(
                (m[0] for (lab, col), m in members.items() if col == c and m and not lab.endswith("[eval]")), None
            )
            task_kind = next((r.task_kind for r in runs if column_of(r) == c and not r.is_average), "choice")
            metric_runs = [r for r in runs if column_of(r) == c and r.metrics]
            guess = majority(examples, task_kind) if examples is not None else None
            if guess is not None and metric_runs:
                try:
                    score = Scorer(metric_runs[0].metrics, metric_runs[0].labels).score(guess)
                except (PredictionsError, ValueError, RuntimeError) as err:
                    self.notes[name].append(f"No majority class on {c}: {err}.")
                    continue
                majority_cells[c] = Cell(MAJORITY, c, Stat(100 * score, None, 1), "majority")
                members[MAJORITY, c] = [guess]
        ensembles: dict[str, str] = {}
        for v in methods + zero:
            label = f"zero-shot: {v}" if v in zero else v
            sizes = {}
            for c in cols:
                m = members.get((label, c))
                if m and len(m) > 1 and len({r.seed for r in by_row[v] if column_of(r) == c}) > 1:
                    try:
                        mixed = ensemble(m)
                        metric_run = next(r for r in by_row[v] if column_of(r) == c)
                        score = Scorer(metric_run.metrics, metric_run.labels).score(mixed)
                    except (PredictionsError, ValueError, RuntimeError) as err:
                        self.notes[name].append(f"No ensemble of {v} on {c}: {err}.")
                        continue
                    sizes[c] = len(m)
                    ens_label = f"{label} · ensemble"
                    cells[ens_label, c] = Cell(ens_label, c, Stat(100 * score, None, len(m)), "ensemble")
                    members[ens_label, c] = [mixed]
            if sizes:
                n = set(sizes.values())
                ensembles[v] = f"{label} · ensemble of {n.pop()} seeds" if len(n) == 1 else f"{label} · ensemble"
        for c, cell in majority_cells.items():
            cells[MAJORITY, c] = cell
        if majority_cells:
            order.append((MAJORITY, "majority"))
        order += [(f"zero-shot: {v}", "zero_shot") for v in zero]
        for v in zero + methods:
            if v in methods:
                order.append((v, "method"))
            if v in ensembles:
                order.append((ensembles[v], "ensemble"))
        order += [(v, "eval") for v in evals]
        # the ensemble rows' cells were keyed "<label> · ensemble": rename to the row's label
        for v, row_label in ensembles.items():
            label = f"zero-shot: {v}" if v in zero else v
            for c in cols:
                if (f"{label} · ensemble", c) in cells:
                    cell = cells.pop((f"{label} · ensemble", c))
                    cell.row = row_label
                    cells[row_label, c] = cell
                    members[row_label, c] = members.pop((f"{label} · ensemble", c))

        self._column_runs = {
            c: next((r for r in runs if column_of(r) == c and r.metrics and not r.is_average), None) for c in cols
        }
        if base in zero:
            base = f"zero-shot: {base}"
        if any(members.values()) and self.resamples:
            if base is None and not any("is several rows" in n for n in self.notes[name]):
                self.notes[name].append(f"No p-values: no row {self.baseline!r} (--baseline names a method or a row).")
            elif not any(members.get((base, c)) for c in cols):
                self.notes[name].append(f"No p-values: the baseline row {base} has no predictions files.")
        self._significance(name, base, cols, cells, members)
        real = [r for r in (runs if span_runs is None else span_runs) if not r.is_average]
        header = ["method", *cols, "trainable params", "checkpoint", "steps"]
        rows, flat = [], []
        for label, kind in order:
            row = [label] + [cells[label, c].text() if (label, c) in cells else DASH for c in cols]
            if kind in ("method", "zero_shot", "eval"):
                v = label.removeprefix("zero-shot: ")
                mine = [r for r in real if r.variant() == v]
                row.append(_span([r.trainable_params for r in mine], lambda n: f"{n:,}"))
                row.append(_span([r.checkpoint_bytes for r in mine], format_bytes))
                row.append(_span([r.train_steps for r in mine], lambda n: f"{n:,}"))
            else:
                row += [DASH, DASH, DASH]
            rows.append(row)
            flat += [cells[label, c] for c in cols if (label, c) in cells]
        metric = {c: metric_label([r for r in runs + lost if column_of(r) == c]) for c in cols}
        split = {c: _one({r.split for r in runs + lost if column_of(r) == c and not r.is_average}) for c in cols}
        caption = _caption(runs + lost, cols, column_of, metric, split, base if any(
            c.p_value is not None for c in flat) else None, self.resamples)  # fmt: skip
        return Table(name, title, header, rows, flat, caption, metric, split)

    def _significance(self, name, base, cols, cells, members) -> None:
        if base is None or not self.resamples or not any(members.values()):
            return
        from promptscale.analysis.scoring import Scorer  # torch: only where there are predictions

        for c in cols:
            reference = members.get((base, c))
            if not reference:
                continue
            run = self._column_runs.get(c)
            if run is None:
                continue
            boot = None
            for (label, col), cell in cells.items():
                if col != c or label == base or cell.stat is None or not members.get((label, col)):
                    continue
                try:
                    if boot is None:
                        boot = Bootstrap(Scorer(run.metrics, run.labels), reference[0], self.resamples)
                    result = boot.compare(members[label, col], reference)
                except (PredictionsError, ValueError, RuntimeError) as err:
                    self.notes[name].append(f"No p-value for {label} on {c}: {err}.")
                    continue
                cell.delta, cell.p_value = result.delta, result.p_value


def _one(values: set) -> str:
    return next(iter(values)) if len(values) == 1 else "/".join(sorted(values))


def _caption(runs, cols, column_of, metric, split, base, resamples) -> str:
    parts = []
    for c in cols:
        mine = [r for r in runs if column_of(r) == c and not r.is_average]
        if not mine:
            parts.append(f"{c}: per seed, the mean of its tasks' scores (seeds with every task)")
            continue
        evals = {r.predictions_n for r in mine if r.predictions_n} or {r.eval_size for r in mine if r.eval_size}
        eval_text = f"{_span(list(evals), str)} eval examples" if evals else f"all of {split[c]}"
        trains = {r.train_size for r in mine}
        train_text = (
            "train: the whole train split"  # data.train_size unset
            if trains == {None}
            else f"train: {_span([t for t in trains if t], str)} examples"
            + (" (some runs the whole split)" if None in trains else "")
        )
        parts.append(f"{c}: {metric[c]} on {split[c]} ({eval_text}; {train_text})")
    text = "Cells: task score ×100, mean ± sample std over seeds (n). " + "; ".join(parts) + "."
    if base is not None:
        text += (
            f" † p < 0.05, ‡ p < 0.01: paired bootstrap over eval examples ({resamples} resamples, seeds pooled) "
            f"against the baseline row {base}."
        )
    return text


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
          "±": r"$\pm$", "–": "--", "×": r"$\times$", "·": r"$\cdot$", "†": r"$^\dagger$",
          "‡": r"$^\ddagger$"}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs ``tabular`` (``\\usepackage{booktabs}``) for ``\\input`` into a table, its
    caption above it as comments."""
    caption = [f"% {latex_escape(line)}" for line in f"{table.title}. {table.caption}".splitlines()]
    lines = [
        *caption,
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
    parts = [f"### {t.title}\n\n{to_markdown(t)}\n\n{t.caption}\n" for t in tables]
    text = "\n".join(parts) or "(no finished runs)\n"
    footer = results.footer()
    return text + (f"\n{footer}\n" if footer else "")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_") or "table"


CELL_FIELDS = ["table", "row", "column", "kind", "metric", "split", "mean", "std", "n", "failed", "delta", "p_value"]


def _cell_record(t: Table, c: Cell) -> list:
    s = c.stat

    def number(x):
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"

    return [t.name, c.row, c.column, c.kind, t.metric.get(c.column, ""), t.split.get(c.column, ""),
            number(s.mean if s else None), number(s.std if s else None), s.n if s else 0, c.failed,
            number(c.delta), "" if c.p_value is None else f"{c.p_value:.4g}"]  # fmt: skip


def write(tables: list[Table], results: Results, out: Path, plots: bool = True) -> list[Path]:
    """``table.md`` (all tables, captions and the footer), ``<table>.csv`` and ``<table>.tex``
    each, ``cells.csv`` (long form, :data:`CELL_FIELDS`; std empty for n = 1, p-value empty where
    no test) and the figures that the data allows (:func:`promptscale.analysis.plots.draw_all`).
    Returns the files written."""
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
    writer.writerow(CELL_FIELDS)
    writer.writerows(_cell_record(t, c) for t in tables for c in t.cells)
    (out / "cells.csv").write_text(buf.getvalue())
    written.append(out / "cells.csv")
    if plots:
        from promptscale.analysis.plots import draw_all

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
        data["cells"] = wandb.Table(columns=CELL_FIELDS, data=[_cell_record(t, c) for t in tables for c in t.cells])
        run.log(data)
        return str(Path(run.dir).parent)
    finally:
        run.finish()


def render(paths, out: Path | None = None, *, columns: str = "task", plots: bool = True, **options) -> str:
    """The Markdown tables of the stores; with ``out``, also write every file. ``options``:
    ``baseline``, ``resamples`` of :func:`build_tables`."""
    results = load(paths)
    tables = build_tables(results, columns, **options)
    if out is not None:
        write(tables, results, Path(out), plots=plots)
    return markdown(tables, results)


def main_table(args) -> None:
    """``promptscale table`` with parsed arguments (see ``promptscale.cli``)."""
    results = load(args.results)
    tables = build_tables(results, args.columns, baseline=args.baseline, resamples=args.bootstrap)
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
