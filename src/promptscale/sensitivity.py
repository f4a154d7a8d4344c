"""Prompt sensitivity: one model, method and task evaluated under K patterns (instruction
phrasings), summarised as mean, std, min and max across the patterns.

Run the patterns as a sweep (``--multirun method=icl method.pattern=0,1,2``), then
``promptscale sensitivity results.jsonl``."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from promptscale.results import read_results


def sensitivity_rows(records: list[dict]) -> list[list[str]]:
    """Rows (model, method, task, seed, K, mean, std, min, max) over the patterns, score ×100."""
    # training runs only: an evaluation-only line ("kind": "eval") scores another split
    latest = {r["config_hash"]: r for r in records if r.get("status") == "finished" and r.get("kind") != "eval"}
    groups: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in latest.values():
        pattern = r["config"]["method"].get("pattern")
        if pattern is not None:
            groups[r["model"], r["method"], r["task"], r["seed"]][pattern] = 100 * r["score"]
    rows = [["model", "method", "task", "seed", "patterns", "mean", "std", "min", "max"]]
    for key in sorted(groups, key=str):
        scores = list(groups[key].values())
        std = f"{statistics.stdev(scores):.1f}" if len(scores) > 1 else "–"  # one pattern: no spread known
        mean, low, high = (f"{v:.1f}" for v in (statistics.fmean(scores), min(scores), max(scores)))
        rows.append([*map(str, key), str(len(scores)), mean, std, low, high])
    return rows


def render_sensitivity(paths: list[Path]) -> str:
    rows = sensitivity_rows([r for p in paths for r in read_results(p)])
    if len(rows) == 1:
        return "(no finished runs with method.pattern set)\n"
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]]) + "\n"
