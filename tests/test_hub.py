"""Without data.dir, a task is exported from its hub copy into its reader's format (hub mocked)."""

import datasets
import pytest

from promptscale.data.datamodule import TaskDataModule
from promptscale.errors import ConfigError
from promptscale.train import compose


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMPTSCALE_CACHE", str(tmp_path / "cache"))
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if path == "aps/super_glue":
            features = datasets.Features(
                premise=datasets.Value("string"),
                hypothesis=datasets.Value("string"),
                idx=datasets.Value("int32"),
                label=datasets.ClassLabel(names=["entailment", "not_entailment"]),
            )
            return datasets.Dataset.from_dict(
                {
                    "premise": ["A cat sat.", "A dog ran."],
                    "hypothesis": ["A cat.", "A bird."],
                    "idx": [0, 1],
                    "label": [0, 1],
                },
                features=features,
            )
        features = datasets.Features(
            tokens=datasets.Sequence(datasets.Value("string")),
            ner_tags=datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
        )
        return datasets.Dataset.from_dict(
            {"tokens": [["Ann", "Lee Jr", "ran"]], "ner_tags": [[1, 2, 0]]}, features=features
        )

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_rte_from_the_hub_reads_label_names_and_caches(fake_hub):
    cfg = compose(["task=rte", "data.dir=null"])
    data = TaskDataModule(cfg.task, cfg.data, seed=0)
    data.read()
    assert [e.label for e in data.eval_examples] == [0, 1]
    assert data.eval_examples[0].fields == {"premise": "A cat sat.", "hypothesis": "A cat."}
    assert ("aps/super_glue", "rte", "validation") in fake_hub
    n_calls = len(fake_hub)
    TaskDataModule(cfg.task, cfg.data, seed=0).read()
    assert len(fake_hub) == n_calls  # second read comes from the exported cache


def test_conll_from_the_hub_becomes_columns(fake_hub):
    cfg = compose(["task=conll03", "data.dir=null"])
    data = TaskDataModule(cfg.task, cfg.data, seed=0)
    data.read()
    assert data.train_examples[0].tokens == ["Ann", "Lee Jr", "ran"]  # a token may hold a space
    assert data.train_examples[0].tags == ["B-PER", "I-PER", "O"]


def test_task_without_a_hub_layout_asks_for_data_dir(fake_hub):
    cfg = compose(["task=wsc", "data.dir=null"])
    with pytest.raises(ConfigError, match="set data.dir"):
        TaskDataModule(cfg.task, cfg.data, seed=0).read()
