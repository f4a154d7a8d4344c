"""``promptscale table``: results stores -> method x task tables (mean ± std over seeds, n)."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from pathlib import Path

from promptscale.results import read_results

SUPERGLUE = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc")


def latest_finished(records: list[dict]) -> list[dict]:
    """One record per config hash (the last finished one), so re-runs are not counted twice."""
    by_hash = {r["config_hash"]: r for r in records if r.get("status") == "finished"}
    return list(by_hash.values())


def _cell(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f} (n={len(values)})"


def build_tables(records: list[dict]) -> dict[str, list[list[str]]]:
    """One table per model: rows methods, columns tasks (+ SuperGLUE average), cells task scores
    ×100; plus trainable parameters per method."""
    scores: dict[tuple, list[float]] = defaultdict(list)
    trainable: dict[tuple, set[int]] = defaultdict(set)
    for r in latest_finished(records):
        scores[r["model"], r["method"], r["task"], r["seed"]].append(r["score"])
        trainable[r["model"], r["method"]].add(r["trainable_params"])
    tables = {}
    for model in sorted({k[0] for k in scores}, key=lambda m: min(r["model_params"] for r in records if r["model"] == m)):
        keys = [k for k in scores if k[0] == model]
        tasks = sorted({k[2] for k in keys})
        methods = sorted({k[1] for k in keys})
        glue = [t for t in tasks if t in SUPERGLUE]
        header = ["method", *tasks, *(["SuperGLUE avg"] if len(glue) > 1 else []), "trainable params"]
        rows = [header]
        for method in methods:
            per_task = {
                t: [statistics.fmean(v) for k, v in scores.items() if k[:3] == (model, method, t)] for t in tasks
            }
            row = [method] + [_cell(per_task[t]) if per_task[t] else "–" for t in tasks]
            if len(glue) > 1:
                seeds = sorted({k[3] for k in keys if k[1] == method})
                averages = [
                    statistics.fmean(scores[model, method, t, s][-1] for t in glue)
                    for s in seeds
                    if all((model, method, t, s) in scores for t in glue)
                ]
                row.append(_cell(averages) if averages else "–")
            counts = sorted(trainable[model, method])  # task heads make it vary by task
            row.append(f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}–{counts[-1]:,}")
            rows.append(row)
        tables[model] = rows
    return tables


def to_markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def render(paths: list[Path], out: Path | None = None) -> str:
    records = [r for p in paths for r in read_results(p)]
    parts = []
    for model, rows in build_tables(records).items():
        parts.append(f"### {model}\n\n{to_markdown(rows)}\n")
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            buf = io.StringIO()
            csv.writer(buf).writerows(rows)
            (out / f"{model}.csv").write_text(buf.getvalue())
    text = "\n".join(parts) or "(no finished runs)\n"
    if out is not None:
        (out / "table.md").write_text(text)
    return text
