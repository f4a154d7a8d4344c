"""The support matrix, cell by cell (issue 12 item 5): every supported (method x family x task
kind) takes a training step and a prediction on the tiny models, and every unsupported one
refuses at start-up with its reason, before any model loads.

Parametrized from ``promptscale.support.support_matrix()`` itself: a newly registered method or
family is tested here by being registered.
"""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from promptscale.families import FAMILIES
from promptscale.support import KIND_TASKS, support_matrix

CELLS = support_matrix()
SUPPORTED = [cell[:3] for cell in CELLS if cell[3] is None]
UNSUPPORTED = [cell for cell in CELLS if cell[3] is not None]

# one step on a few short examples; chain-of-thought generates a token or two
SMALL = ["trainer.max_steps=1", "data.train_size=4", "data.eval_size=4", "data.max_length=64"]
METHOD_SMALL = {"cot": ["method.max_new_tokens=2", "method.answer_tokens=2"]}


def cell_id(cell) -> str:
    return "-".join(cell[:3])


def overrides(method: str, family: str, kind: str) -> list[str]:
    return [f"method={method}", f"model={FAMILIES[family].tiny_model}", f"task={KIND_TASKS[kind]}"]


class Watch(L.Callback):
    """Every parameter at the start of training, and which of them the training step changed
    (read at the end of training, before ``on_fit_end`` folds prefixes or merges LoRA)."""

    started = False

    def on_train_start(self, trainer, module):
        self.started = True
        self.before = {n: (p.requires_grad, p.detach().clone()) for n, p in module.named_parameters()}

    def on_train_end(self, trainer, module):
        after = dict(module.named_parameters())
        self.changed = {n for n, (_, p) in self.before.items() if not torch.equal(after[n].detach(), p)}

    def names(self, trainable: bool) -> set[str]:
        return {n for n, (grad, _) in self.before.items() if grad == trainable}


def eval_examples(record: dict):
    """The examples the run evaluated, read again from its recorded config (no model)."""
    from promptscale.data.datamodule import TaskDataModule

    cfg = OmegaConf.create(record["config"])
    data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
    data.read()
    return cfg, data.eval_examples


def test_the_matrix_has_both_kinds_of_cells():
    assert len(SUPPORTED) >= 60 and UNSUPPORTED
    assert len(CELLS) == len({cell[:3] for cell in CELLS})


@pytest.mark.parametrize("method,family,kind", SUPPORTED, ids=[cell_id(c) for c in SUPPORTED])
def test_supported_cell_trains_and_predicts(train, tmp_path, method, family, kind):
    from promptscale.predictions import read_predictions, resolve_stored

    watch = Watch()
    record = train([*overrides(method, family, kind), *SMALL, *METHOD_SMALL.get(method, [])], tmp_path, [watch])
    assert record["status"] == "finished", record.get("error")
    assert (record["method"], record["model"], record["task"]) == (
        method,
        FAMILIES[family].tiny_model,
        KIND_TASKS[kind],
    )
    assert not math.isnan(record["score"])

    if record["train_steps"] == 0:  # nothing to train (icl, cot): it only evaluates
        assert record["trained_params"] == 0 and not watch.started
    else:
        assert record["train_steps"] == 1
        trainable, frozen = watch.names(True), watch.names(False)
        assert trainable and record["trained_params"] == sum(watch.before[n][1].numel() for n in trainable)
        assert watch.changed & trainable, "the training step changed no trainable weight"
        assert not watch.changed & frozen, f"frozen weights changed: {sorted(watch.changed & frozen)[:5]}"

    # one prediction per evaluated example, in order, from the label set / candidates / tag set
    cfg, examples = eval_examples(record)
    rows = read_predictions(resolve_stored(record["predictions"]["path"], tmp_path / "run" / "results.jsonl"))
    assert len(rows) == record["predictions"]["n"] == len(examples) == 4
    assert [r["id"] for r in rows] == [ex.guid for ex in examples]
    labels = list(cfg.task.labels)
    for row, ex in zip(rows, examples):
        if kind == "tagging":
            assert len(row["pred"]) == len(ex.tokens) and set(row["pred"]) <= set(labels)
            assert row["gold"] == ex.tags
        elif kind == "choice":
            assert row["pred"] in ex.candidates and row["gold"] == ex.candidates[ex.label]
        else:
            assert row["pred"] in labels and row["gold"] == labels[ex.label]
        if "scores" in row:  # the prediction is the argmax of its candidates' scores
            names = ex.candidates if kind == "choice" else labels
            assert list(row["scores"]) == list(names)
            assert row["scores"][row["pred"]] == max(row["scores"].values())


@pytest.mark.parametrize("method,family,kind,reason", UNSUPPORTED, ids=[cell_id(c) for c in UNSUPPORTED])
def test_unsupported_cell_refuses_before_loading_a_model(sample_data, tmp_path, no_model, method, family, kind, reason):
    from conftest import FAST
    from promptscale.errors import ConfigError
    from promptscale.train import compose, run

    out_dir = tmp_path / "out"
    cfg = compose([*FAST, f"data.dir={sample_data}", *overrides(method, family, kind)])
    with pytest.raises(ConfigError) as info:
        run(cfg, out_dir, out_dir / "results.jsonl")
    line = str(info.value)
    assert "\n" not in line and line.endswith(reason)
    assert (
        f"method={method} on task={KIND_TASKS[kind]} ({kind}) with model={FAMILIES[family].tiny_model} ({family})"
        in line
    )
    assert not out_dir.exists()
