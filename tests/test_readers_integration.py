"""Readers on the real FewGLUE and CoNLL-2003 files under $PROMPTSCALE_DATA_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from promptscale.data.readers import READERS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.environ.get("PROMPTSCALE_DATA_DIR"), reason="PROMPTSCALE_DATA_DIR is not set"),
]

FOLDERS = {
    "boolq": "BoolQ",
    "cb": "CB",
    "copa": "COPA",
    "rte": "RTE",
    "wic": "WiC",
    "wsc": "WSC",
    "multirc": "MultiRC",
    "record": "ReCoRD",
}
NER = ["O"] + [f"{p}-{t}" for t in ("PER", "LOC", "ORG", "MISC") for p in "BI"]


def fewglue(task: str, split: str) -> Path:
    return Path(os.environ["PROMPTSCALE_DATA_DIR"]) / "fewglue" / FOLDERS[task] / f"{split}.jsonl"


@pytest.mark.parametrize(
    "task,n", [("cb", 56), ("rte", 277), ("boolq", 3270), ("copa", 100), ("wic", 638), ("wsc", 104)]
)
def test_val_counts(task, n):
    examples = READERS[task](fewglue(task, "val"), None)
    assert len(examples) == n
    assert all(e.label is not None for e in examples)


@pytest.mark.parametrize("task", ["boolq", "cb", "copa", "rte", "wic", "wsc", "record"])
def test_train_has_32(task):
    assert len(READERS[task](fewglue(task, "train"), None)) == 32


@pytest.mark.parametrize("split,passages,questions,answers", [("train", 32, 32, 154), ("val", 83, 953, 4848)])
def test_multirc_counts(split, passages, questions, answers):
    examples = READERS["multirc"](fewglue("multirc", split), None)
    assert len(examples) == answers
    assert len({e.group for e in examples}) == questions
    assert len({e.group.split("-")[0] for e in examples}) == passages


def test_record_dev32():
    examples = READERS["record"](fewglue("record", "dev32"), None)
    assert len(examples) == 32
    assert all(e.gold and e.label == e.gold[0] for e in examples)
    assert all(e.candidates[i] in e.answers for e in examples for i in e.gold)


def test_wsc_marks_every_pronoun():
    for e in READERS["wsc"](fewglue("wsc", "val"), None):
        assert f"*{e.fields['span2'].split()[0].lower()}" in e.fields["text"].lower()


def test_conll2003_counts():
    root = Path(os.environ["PROMPTSCALE_DATA_DIR"]) / "conll2003"
    train = READERS["conll"](root / "train.txt", NER)
    assert len(train) == 14041
    assert len(READERS["conll"](root / "valid.txt", NER)) == 3250
    assert len(READERS["conll"](root / "test.txt", NER)) == 3453
