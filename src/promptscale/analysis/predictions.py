"""Per-example predictions files, scored with the task's own metrics (:mod:`promptscale.metrics`).

A run's ``predictions.jsonl.gz`` holds one JSON object per eval example, in eval order:
``{"id", "gold", "pred", "scores": {candidate: score}}`` (no ``scores`` for tagging, where
``gold``/``pred`` are tag lists); MultiRC adds ``"group"`` (the question), ReCoRD's ``gold`` may
be a list of accepted answers. Its results line names it with a sha256 digest and a line count,
both checked here: a file that changed since the run is not used.

:class:`Scorer` turns examples into the task's metric through the metric objects of
:func:`promptscale.metrics.build_metrics` (the same code that scored the run). To recompute the
metric on thousands of bootstrap resamples cheaply, each unit's metric state (an example, or a
MultiRC question) is taken once, and a resample's state is their count-weighted sum, loaded with
``Metric.merge_state``: exact for every metric whose states are sums (accuracy, macro-F1,
ReCoRD, entity F1). MultiRC keeps concatenated states (its exact match needs whole questions),
so its resamples are updated example by example.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from promptscale.metrics import build_metrics, task_score


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


class Scorer:
    """The task's metrics (``task.metrics`` names of :func:`promptscale.metrics.build_metrics`) on
    examples: :meth:`score` for a whole set, :meth:`resampled` for bootstrap resamples of units."""

    def __init__(self, metric_names, labels=()) -> None:
        self.names = tuple(metric_names)
        self.labels = list(labels)
        if not self.names:
            raise PredictionsError("the results line names no task metrics (config.task.metrics)")

    # ---- one metric update per metrics.py's signature (as promptscale.methods.base.update_metrics)
    def _label_ids(self, values, vocab: dict) -> torch.Tensor:
        return torch.tensor([vocab.setdefault(str(v), len(vocab)) for v in values], dtype=torch.long)

    def _update(self, name: str, metric, rows) -> None:
        golds, preds = [r["gold"] for r in rows], [r["pred"] for r in rows]
        if name in ("accuracy", "f1_macro"):
            if any(isinstance(g, list) for g in golds):  # several accepted answers: right if any
                hit = [p in (g if isinstance(g, list) else [g]) for g, p in zip(golds, preds)]
                metric.update(torch.tensor([0 if h else 1 for h in hit]), torch.zeros(len(hit), dtype=torch.long))
                return
            vocab = {label: i for i, label in enumerate(self.labels)}
            target = self._label_ids(golds, vocab)
            metric.update(self._label_ids(preds, vocab), target)
        elif name == "multirc":
            vocab = {label: i for i, label in enumerate(self.labels or ["False", "True"])}
            groups = {}
            group_ids = torch.tensor([groups.setdefault(r["_unit"], len(groups)) for r in rows], dtype=torch.long)
            metric.update(self._label_ids(preds, vocab), self._label_ids(golds, vocab), group_ids)
        elif name == "record":
            metric.update([str(p) for p in preds], [g if isinstance(g, list) else [g] for g in golds])
        elif name == "entity_f1":
            metric.update([list(p) for p in preds], [list(g) for g in golds])
        else:
            raise PredictionsError(f"metric {name!r} cannot be computed from predictions")

    def _collection(self):
        num_labels = len(self.labels) or None
        return build_metrics(list(self.names), num_labels)

    def _compute(self, collection) -> float:
        values = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchmetrics: compute() on a merged state without update()
            for metric in collection.values():
                values.update({k: float(v) for k, v in metric.compute().items()})
        return task_score(values)

    def score(self, examples: Examples) -> float:
        """The task score (0-1) of all examples, as the run computed it."""
        collection = self._collection()
        rows = [{**r, "_unit": i if "group" not in r else r["group"]} for i, r in enumerate(examples.rows)]
        for name, metric in collection.items():
            self._update(name, metric, rows)
        return self._compute(collection)

    # ---- resampling
    @staticmethod
    def units(examples: Examples) -> list[list[int]]:
        """Positions of the examples of each resampling unit: a MultiRC question (``group``), else one example."""
        if not any("group" in r for r in examples.rows):
            return [[i] for i in range(len(examples))]
        by_group: dict = {}
        for i, r in enumerate(examples.rows):
            by_group.setdefault(str(r.get("group", f"#{i}")), []).append(i)
        return list(by_group.values())

    def resampled(self, examples: Examples, units: list[list[int]], counts: np.ndarray) -> np.ndarray:
        """Task score of each resample; ``counts[b, u]`` = how often resample b draws unit u."""
        collection = self._collection()
        rows = examples.rows
        states = {}
        additive = True
        for name, metric in collection.items():
            per_unit = []
            for unit in units:
                metric.reset()
                self._update(name, metric, [{**rows[i], "_unit": 0} for i in unit])
                state = metric.metric_state
                if any(not isinstance(v, torch.Tensor) for v in state.values()):
                    additive = False
                    break
                per_unit.append({k: v.detach().clone() for k, v in state.items()})
            if not additive:
                break
            states[name] = {k: torch.stack([s[k] for s in per_unit]).double() for k in per_unit[0]}
        if not additive:
            return self._resampled_by_update(examples, units, counts)
        weights = torch.as_tensor(counts, dtype=torch.float64)
        summed = {
            name: {k: torch.tensordot(weights, v, dims=([1], [0])) for k, v in by_state.items()}
            for name, by_state in states.items()
        }
        out = np.empty(len(counts))
        for b in range(len(counts)):
            for name, metric in collection.items():
                metric.reset()
                default = metric.metric_state
                metric.merge_state({k: v[b].to(default[k].dtype) for k, v in summed[name].items()})
            out[b] = self._compute(collection)
        return out

    def _resampled_by_update(self, examples: Examples, units, counts: np.ndarray) -> np.ndarray:
        collection = self._collection()
        out = np.empty(len(counts))
        for b, row in enumerate(counts):
            drawn = np.repeat(np.arange(len(units)), row)
            rows = [{**examples.rows[i], "_unit": k} for k, u in enumerate(drawn) for i in units[u]]
            for name, metric in collection.items():
                metric.reset()
                self._update(name, metric, rows)
            out[b] = self._compute(collection)
        return out


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
