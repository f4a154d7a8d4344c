"""Per-example predictions files, scored with the task's own metrics (:mod:`promptscale.metrics`).

A run's ``predictions-<hash>.jsonl.gz`` holds one JSON object per eval example, in eval order:
``{"id", "gold", "pred", "scores": {candidate: score}}`` (no ``scores`` for tagging, where
``gold``/``pred`` are tag lists); MultiRC adds ``"group"`` (the question), ReCoRD's ``gold`` may
be a list of accepted answers. Its results line names it with a sha256 digest and a line count,
both checked here: a file that changed since the run is not used.

Scoring them is :mod:`.scoring` (it imports torch; this module does not).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class PredictionsError(ValueError):
    """A predictions file that is missing, changed since its run, or does not fit its task."""


@dataclass(frozen=True)
class Examples:
    """One run's predictions: ``ids`` in eval order and the examples by position."""

    ids: tuple
    rows: tuple  # dicts: gold, pred, scores?, group?

    def __len__(self) -> int:
        return len(self.ids)


def read_predictions(path: Path, sha256: str | None = None, n: int | None = None) -> Examples:
    """The examples of a ``predictions.jsonl[.gz]`` file; PredictionsError if it is missing,
    its digest or line count differ from the results line's, or a line is not an example."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PredictionsError(f"{path}: {err.strerror or err}") from None
    if sha256 and hashlib.sha256(raw).hexdigest() != sha256:
        raise PredictionsError(f"{path}: sha256 differs from its results line (the file changed since the run)")
    text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    ids, rows = [], []
    for number, line in enumerate(text.decode().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ids.append(str(row["id"]))
            if "gold" not in row or "pred" not in row:
                raise KeyError("gold" if "gold" not in row else "pred")
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise PredictionsError(f"{path}:{number}: not a prediction ({type(err).__name__}: {err})") from None
        rows.append(row)
    if n is not None and len(rows) != n:
        raise PredictionsError(f"{path}: {len(rows)} predictions, its results line says {n}")
    if len(set(ids)) != len(ids):
        raise PredictionsError(f"{path}: example ids repeat")
    return Examples(tuple(ids), tuple(rows))


def units(examples: Examples) -> list[list[int]]:
    """Positions of the examples of each resampling unit: a MultiRC question (``group``), else one example."""
    if not any("group" in r for r in examples.rows):
        return [[i] for i in range(len(examples))]
    by_group: dict = {}
    for i, r in enumerate(examples.rows):
        by_group.setdefault(str(r.get("group", f"#{i}")), []).append(i)
    return list(by_group.values())


def same_gold(members: list[Examples]) -> None:
    """PredictionsError unless the members (aligned by id) have the same gold answers: predictions
    of different eval sets (another data file, another split) are never compared or pooled."""
    first = members[0]
    for m in members[1:]:
        for i, (x, y) in enumerate(zip(first.rows, m.rows)):
            if x["gold"] != y["gold"] or x.get("group") != y.get("group"):
                raise PredictionsError(
                    f"example {first.ids[i]} has another gold answer in another run (not the same eval set)"
                )


def majority(examples: Examples, task_kind: str) -> Examples | None:
    """Every example predicted as the most frequent gold label of the eval set (for tagging, the
    most frequent gold tag, every token); None for choice tasks, whose answers are per example."""
    if task_kind == "choice":
        return None
    if task_kind == "tagging":
        tag = Counter(t for r in examples.rows for t in r["gold"]).most_common(1)[0][0]
        rows = [{**r, "pred": [tag] * len(r["gold"])} for r in examples.rows]
    else:
        label = Counter(str(r["gold"]) for r in examples.rows).most_common(1)[0][0]
        rows = [{**r, "pred": label} for r in examples.rows]
    return Examples(examples.ids, tuple({k: v for k, v in r.items() if k != "scores"} for r in rows))


def ensemble(members: list[Examples]) -> Examples:
    """Prompt ensembling (Lester et al. 2021 §7): per example, each candidate's score averaged over
    the members, the prediction the candidate with the highest mean. PredictionsError when the
    members differ in examples or candidates, or have no scores (tagging)."""
    first = members[0]
    if any(m.ids != first.ids for m in members):
        raise PredictionsError("the seeds' predictions cover different examples")
    same_gold(members)
    rows = []
    for i, row in enumerate(first.rows):
        scores = [m.rows[i].get("scores") for m in members]
        if any(not s for s in scores):
            raise PredictionsError(f"example {first.ids[i]} has no candidate scores")
        if any(s.keys() != scores[0].keys() for s in scores):
            raise PredictionsError(f"example {first.ids[i]}: the seeds scored different candidates")
        mean = {c: float(np.mean([s[c] for s in scores])) for c in scores[0]}
        rows.append({**row, "pred": max(mean, key=mean.get), "scores": mean})
    return Examples(first.ids, tuple(rows))
