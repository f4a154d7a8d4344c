"""SuperGLUE and CoNLL metrics as the official scripts (SuperGLUE, conlleval) define them.

Every metric is a ``torchmetrics.Metric`` accumulating across ``update`` calls and
returning a dict of scalar tensors from ``compute``; :func:`build_metrics` puts a
task's metrics in a ``MetricCollection``, whose ``compute`` merges those dicts.
"""

from __future__ import annotations

import re
import string
from collections import Counter

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import MulticlassF1Score
from torchmetrics.functional.classification import binary_f1_score
from torchmetrics.utilities import dim_zero_cat

from promptscale.errors import ConfigError

# the values averaged into a task's single score; precision/recall are reported only
PRIMARY = ("accuracy", "f1_macro", "em", "f1a", "f1")
_PUNCTUATION = set(string.punctuation)


def _check_same_shape(preds: Tensor, target: Tensor) -> None:
    if preds.shape != target.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape")


# torchmetrics' accuracies need num_classes; choice tasks vary it per example, so average correctness
class Accuracy(MeanMetric):
    """Fraction of ``preds`` equal to ``target`` (class or candidate indices)."""

    def update(self, preds: Tensor, target: Tensor) -> None:
        _check_same_shape(preds, target)
        super().update((preds == target).float())

    def compute(self) -> dict[str, Tensor]:
        return {"accuracy": super().compute()}


class MacroF1(MulticlassF1Score):
    """Unweighted mean of per-class F1 (CB); as sklearn, classes in neither preds nor target are skipped."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes=num_classes, average="macro")

    def compute(self) -> dict[str, Tensor]:
        return {"f1_macro": super().compute()}


# torchmetrics has no exact match over variable-size groups
class MultiRCScores(Metric):
    """MultiRC: ``em`` = fraction of questions with all options right, ``f1a`` = binary F1 over options.

    ``groups`` holds a question id per option, unique over the whole evaluation set,
    so a question's options may arrive in different batches.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("groups", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, groups: Tensor) -> None:
        _check_same_shape(preds, target)
        _check_same_shape(preds, groups)
        self.preds.append(preds.long())
        self.target.append(target.long())
        self.groups.append(groups.long())

    def compute(self) -> dict[str, Tensor]:
        preds, target, groups = (dim_zero_cat(s) for s in (self.preds, self.target, self.groups))
        questions, question = torch.unique(groups, return_inverse=True)
        wrong = torch.zeros(len(questions), dtype=torch.long, device=preds.device)
        wrong.scatter_add_(0, question, (preds != target).long())
        return {"em": (wrong == 0).float().mean(), "f1a": binary_f1_score(preds, target)}


def normalize_answer(text: str) -> str:
    """SQuAD/ReCoRD normalization: lowercase, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _token_f1(pred: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(pred).split(), normalize_answer(gold).split()
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


# torchmetrics.text.SQuAD gives F1 1 to an empty prediction for an empty gold (SQuAD v2); ReCoRD gives 0
class ReCoRDScores(Metric):
    """ReCoRD: mean over examples of the best token F1 and exact match against any gold answer."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("f1_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("em_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, pred_texts: list[str], answers: list[list[str]]) -> None:
        if len(pred_texts) != len(answers):
            raise ValueError(f"{len(pred_texts)} predictions for {len(answers)} answer lists")
        if any(not golds for golds in answers):
            raise ValueError("every example needs at least one gold answer")
        self.f1_sum += sum(max(_token_f1(p, g) for g in golds) for p, golds in zip(pred_texts, answers))
        self.em_sum += sum(
            max(float(normalize_answer(p) == normalize_answer(g)) for g in golds)
            for p, golds in zip(pred_texts, answers)
        )
        self.total += len(pred_texts)

    def compute(self) -> dict[str, Tensor]:
        return {"f1": (self.f1_sum / self.total).float(), "em": (self.em_sum / self.total).float()}


def conll_chunks(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) of each chunk, by conlleval's startOfChunk/endOfChunk rules (B/I/E/S/O)."""
    chunks = set()
    prev_tag, prev_type, begin = "O", "", 0
    for i, label in enumerate([*tags, "O"]):
        tag, _, type_ = label.partition("-")
        ends = (
            prev_tag in ("E", "S")
            or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag != "O" and prev_type != type_)
        )
        starts = (
            tag in ("B", "S")
            or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
            or (tag != "O" and prev_type != type_)
        )
        if ends:
            chunks.add((prev_type, begin, i - 1))
        if starts:
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


# torchmetrics has no chunk-level sequence-labelling metric
class EntityF1(Metric):
    """conlleval entity-level micro precision/recall/F1; an entity counts if type and both ends match."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("tp", "n_pred", "n_gold"):
            self.add_state(name, default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, pred_tags: list[list[str]], gold_tags: list[list[str]]) -> None:
        if len(pred_tags) != len(gold_tags):
            raise ValueError(f"{len(pred_tags)} predicted sentences for {len(gold_tags)} gold sentences")
        for pred, gold in zip(pred_tags, gold_tags):
            if len(pred) != len(gold):
                raise ValueError(f"sentence has {len(pred)} predicted tags for {len(gold)} gold tags")
            pred_chunks, gold_chunks = conll_chunks(pred), conll_chunks(gold)
            self.tp += len(pred_chunks & gold_chunks)
            self.n_pred += len(pred_chunks)
            self.n_gold += len(gold_chunks)

    def compute(self) -> dict[str, Tensor]:
        # tp <= n_pred, n_gold, so clamping the denominators makes 0/0 come out as 0
        return {
            "precision": self.tp / self.n_pred.clamp(min=1),
            "recall": self.tp / self.n_gold.clamp(min=1),
            "f1": 2 * self.tp / (self.n_pred + self.n_gold).clamp(min=1),
        }


def build_metrics(names: list[str], num_labels: int | None) -> MetricCollection:
    """The task's metrics by YAML name; ``collection.update`` takes the arguments they share.

    - ``accuracy``, ``f1_macro`` (needs ``num_labels``): ``update(preds, target)``
    - ``multirc``: ``update(preds, target, groups)``
    - ``record``: ``update(pred_texts, answers)``
    - ``entity_f1``: ``update(pred_tags, gold_tags)``
    """
    metrics: dict[str, Metric] = {}
    for name in names:
        if name == "accuracy":
            metrics[name] = Accuracy()
        elif name == "f1_macro":
            if num_labels is None:
                raise ConfigError("metric f1_macro needs the task's number of labels")
            metrics[name] = MacroF1(num_labels)
        elif name == "multirc":
            metrics[name] = MultiRCScores()
        elif name == "record":
            metrics[name] = ReCoRDScores()
        elif name == "entity_f1":
            metrics[name] = EntityF1()
        else:
            raise ConfigError(f"unknown metric {name!r}; known: accuracy, f1_macro, multirc, record, entity_f1")
    return MetricCollection(metrics)


def task_score(values: dict[str, float]) -> float:
    """A task's single number as SuperGLUE averages it: the mean of the primary values present."""
    primary = [float(values[k]) for k in PRIMARY if k in values]
    if not primary:
        raise ValueError(f"no primary metric among {sorted(values)}; expected one of {PRIMARY}")
    return sum(primary) / len(primary)
