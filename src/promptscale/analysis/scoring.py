"""The task's metrics on predictions, through :mod:`promptscale.metrics` (the code that scored the run).

To recompute a metric on thousands of bootstrap resamples cheaply, each unit's metric state (an
example, or a MultiRC question) is taken once, and a resample's state is their count-weighted
sum, loaded with ``Metric.merge_state``: exact for every metric whose states are sums (accuracy,
macro-F1, ReCoRD, entity F1). MultiRC keeps concatenated states (its exact match needs whole
questions), so its resamples are updated example by example.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from promptscale.analysis.predictions import Examples, PredictionsError
from promptscale.metrics import build_metrics, task_score


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
    def resampled(self, examples: Examples, units: list[list[int]], counts: np.ndarray) -> np.ndarray:
        """Task score of each resample; ``counts[b, u]`` = how often resample b draws unit u."""
        values: list[dict] = [{} for _ in range(len(counts))]
        for name, metric in self._collection().items():
            if name == "multirc":  # concatenated states: update on each resample
                per_resample = self._multirc_resampled(metric, examples.rows, units, counts)
            else:
                per_resample = self._merged_resampled(name, metric, examples.rows, units, counts)
            for v, r in zip(values, per_resample):
                v.update(r)
        return np.array([task_score(v) for v in values])

    def _merged_resampled(self, name: str, metric, rows, units, counts: np.ndarray) -> list[dict]:
        per_unit = []
        for unit in units:
            metric.reset()
            self._update(name, metric, [{**rows[i], "_unit": 0} for i in unit])
            state = metric.metric_state
            if any(not isinstance(v, torch.Tensor) for v in state.values()):
                raise PredictionsError(f"metric {name!r} keeps no summable state: it cannot be resampled")
            per_unit.append({k: v.detach().clone() for k, v in state.items()})
        stacked = {k: torch.stack([s[k] for s in per_unit]).double() for k in per_unit[0]}
        weights = torch.as_tensor(counts, dtype=torch.float64)
        summed = {k: torch.tensordot(weights, v, dims=([1], [0])) for k, v in stacked.items()}
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchmetrics: compute() on a merged state without update()
            for b in range(len(counts)):
                metric.reset()
                default = metric.metric_state
                metric.merge_state({k: v[b].to(default[k].dtype) for k, v in summed.items()})
                out.append({k: float(v) for k, v in metric.compute().items()})
        return out

    def _multirc_resampled(self, metric, rows, units, counts: np.ndarray) -> list[dict]:
        vocab = {label: i for i, label in enumerate(self.labels or ["False", "True"])}
        preds = self._label_ids([r["pred"] for r in rows], vocab)
        target = self._label_ids([r["gold"] for r in rows], vocab)
        arrays = [np.asarray(u) for u in units]
        sizes = np.array([len(u) for u in units])
        out = []
        for row in counts:
            drawn = np.repeat(np.arange(len(units)), row)
            idx = torch.from_numpy(np.concatenate([arrays[u] for u in drawn]))
            groups = torch.from_numpy(np.repeat(np.arange(len(drawn)), sizes[drawn]))  # a question per draw
            metric.reset()
            metric.update(preds[idx], target[idx], groups)
            out.append({k: float(v) for k, v in metric.compute().items()})
        return out
