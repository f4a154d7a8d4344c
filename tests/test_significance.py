"""Predictions files -> majority, zero-shot and ensemble rows, paired-bootstrap p-values; eval
lines and failed runs kept apart and marked. Hand-built stores and predictions files."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from promptscale.analysis.load import load
from promptscale.analysis.predictions import Examples, ensemble, majority, units
from promptscale.analysis.scoring import Scorer
from promptscale.analysis.table import build_tables, markdown, render
from promptscale.results import config_hash

LABELS = ["entailment", "contradiction", "neutral"]
GOLD = ["entailment"] * 30 + ["contradiction"] * 10  # majority class: 75 %


def wrong(gold: str) -> str:
    return "neutral" if gold != "neutral" else "entailment"


def predictions(correct, strength=lambda i: 1.0) -> list[dict]:
    """One line per example: the predicted label scores ``strength(i)``, the others 0."""
    rows = []
    for i, gold in enumerate(GOLD):
        pred = gold if i in correct else wrong(gold)
        rows.append(
            {"id": str(i), "gold": gold, "pred": pred, "scores": {c: strength(i) * (c == pred) for c in LABELS}}
        )
    return rows


def run(folder: Path, method: str, seed: int, rows: list[dict] | None, *, split=None, kind=None, status="finished",
        **method_cfg) -> dict:  # fmt: skip
    config = {"experiment": "sig", "seed": seed, "data": {"eval_split": split, "train_size": 32},
              "task": {"name": "cb", "kind": "classification", "labels": LABELS, "metrics": ["accuracy"],
                       "eval_split": "val"},
              "model": {"name": "m", "params": 1000}, "method": {"name": method, **method_cfg}}  # fmt: skip
    key = config_hash(config) + (kind or "")
    record = {"status": status, "config_hash": key, "config": config, "task": "cb", "method": method, "model": "m",
              "seed": seed, "model_params": 1000, "train_steps": 0 if method == "icl" else 50}  # fmt: skip
    if kind:
        record |= {"kind": kind, "of": config_hash(config)}
    if status == "finished":
        record["score"] = sum(r["gold"] == r["pred"] for r in rows) / len(rows)
        data = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
        path = folder / key / "predictions.jsonl.gz"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        record["predictions"] = {"path": f"{key}/predictions.jsonl.gz", "sha256": hashlib.sha256(data).hexdigest(),
                                 "n": len(rows)}  # fmt: skip
    return record


def store(folder: Path, records: list[dict]) -> Path:
    path = folder / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def sig_store(tmp_path) -> Path:
    seed1_strength = {**{i: 0.5 for i in range(10)}, **{i: 3.0 for i in range(30, 40)}}
    records = [
        run(tmp_path, "finetune", 0, predictions(range(30))),  # 75 %
        run(tmp_path, "finetune", 1, predictions(range(10, 40), lambda i: seed1_strength.get(i, 1.0))),  # 75 %
        run(tmp_path, "prompt_tuning", 0, predictions(range(12))),  # 30 %
        run(tmp_path, "prompt_tuning", 1, predictions(range(28, 40))),  # 30 %
        run(tmp_path, "icl", 0, predictions(range(20)), shots=0),  # zero-shot, 50 %
        run(tmp_path, "finetune", 0, predictions(range(30)), split="dev32", kind="eval"),
        run(tmp_path, "lora", 0, None, status="failed"),  # a sweep job that failed: its cell is marked
    ]
    return store(tmp_path, records)


def test_reference_rows_ensemble_and_p_values(sig_store, tmp_path):
    results = load([sig_store])
    (table,) = build_tables(results, resamples=400)
    rows = {r[0]: r[1:] for r in table.rows}
    assert [r[0] for r in table.rows] == [
        "majority class", "zero-shot: icl", "finetune", "finetune · ensemble of 2 seeds", "lora", "prompt_tuning",
        "prompt_tuning · ensemble of 2 seeds", "finetune [eval]",
    ]  # fmt: skip
    assert table.header[:3] == ["method", "cb (dev32)", "cb (val)"]  # an eval split of its own, never mixed
    assert rows["majority class"][:2] == ["–", "75.0"]
    assert rows["finetune"][:2] == ["–", "75.0 ± 0.0 (n=2)"]  # the baseline: no marker
    # seed 0 is right on 0-29, seed 1 on 10-39 and more sure where seed 0 is wrong: the mean scores are right on all
    assert rows["finetune · ensemble of 2 seeds"][1].startswith("100.0 (ens. of 2)")
    assert rows["prompt_tuning"][1] == "30.0 ± 0.0 (n=2) ‡"  # 45 points under the baseline on 40 examples
    assert rows["lora"][:2] == ["–", "failed (1)"]
    assert rows["finetune [eval]"][:2] == ["75.0 (n=1)", "–"]
    assert rows["zero-shot: icl"][-1] == "0"  # steps
    cells = {(c.row, c.column): c for c in table.cells}
    # 75 % as the baseline, right on other examples: no difference to see
    assert cells["majority class", "cb (val)"].p_value > 0.5 and cells["majority class", "cb (val)"].delta == 0
    assert cells["prompt_tuning", "cb (val)"].delta == pytest.approx(-45.0)
    assert cells["prompt_tuning", "cb (val)"].p_value < 0.01
    assert cells["finetune · ensemble of 2 seeds", "cb (val)"].p_value < 0.01
    assert "cb (val): accuracy on val (40 eval examples; train: 32 examples)" in table.caption
    assert "against the baseline row finetune" in table.caption and "(400 resamples, seeds pooled)" in table.caption

    render([sig_store], tmp_path / "out", resamples=200, plots=False)
    with (tmp_path / "out" / "cells.csv").open() as f:
        cells_csv = {(c["row"], c["column"]): c for c in csv.DictReader(f)}
    assert float(cells_csv["prompt_tuning", "cb (val)"]["p_value"]) < 0.01
    assert cells_csv["finetune", "cb (val)"]["p_value"] == ""
    assert cells_csv["lora", "cb (val)"]["failed"] == "1" and cells_csv["lora", "cb (val)"]["mean"] == ""


@pytest.mark.parametrize(
    ("baseline", "row", "cell"),
    [
        ("majority class", "majority class", "75.0"),
        ("icl", "zero-shot: icl", "50.0 (n=1)"),
        ("zero-shot: icl", "zero-shot: icl", "50.0 (n=1)"),
        ("prompt_tuning", "prompt_tuning", "30.0 ± 0.0 (n=2)"),
    ],
)
def test_any_row_can_be_the_baseline(sig_store, baseline, row, cell):
    (table,) = build_tables(load([sig_store]), baseline=baseline, resamples=200)
    rows = {r[0]: r[2] for r in table.rows}
    assert rows[row] == cell  # the baseline itself: no marker
    assert rows["finetune · ensemble of 2 seeds"].endswith("‡")  # 100 % beats each of them
    assert f"against the baseline row {row}." in table.caption


def test_columns_model_keeps_each_split_in_its_own_table(sig_store):
    dev32, val = build_tables(load([sig_store]), "model", resamples=50)
    assert (dev32.title, val.title) == ("cb (dev32)", "cb (val)")
    assert [r[0] for r in dev32.rows] == ["finetune [eval]"]  # its own baseline: nothing to compare, nothing said
    assert "No p-values" not in dev32.caption and "m: accuracy on dev32" in dev32.caption
    assert val.rows[0] == ["majority class", "75.0", "–", "–", "–"]


def test_an_unknown_baseline_is_said(sig_store):
    (table,) = build_tables(load([sig_store]), baseline="nope", resamples=50)
    assert "No p-values: no row 'nope'" in table.caption and "†" not in str(table.rows)


def test_an_eval_line_with_its_runs_hash_is_kept_apart(tmp_path):
    trained = run(tmp_path, "finetune", 0, predictions(range(30)))
    evaluated = run(tmp_path, "finetune", 0, predictions(range(20)), split="dev32", kind="eval")
    evaluated["config_hash"] = trained["config_hash"]  # the contract allows either
    results = load([store(tmp_path, [trained, evaluated])])
    assert sorted((r.kind, r.split, r.score) for r in results.runs) == [("eval", "dev32", 0.5), ("train", "val", 0.75)]


def test_predictions_of_another_eval_set_are_not_compared(tmp_path):
    """Same ids, other gold answers (another data file): no p-value, no ensemble, said why."""
    other = [dict(r, gold=wrong(r["gold"])) for r in predictions(range(30))]
    records = [run(tmp_path, "finetune", 0, predictions(range(30))), run(tmp_path, "finetune", 1, predictions(range(30))),
               run(tmp_path, "lora", 0, other), run(tmp_path, "lora", 1, other)]  # fmt: skip
    results = load([store(tmp_path, records)])
    (table,) = build_tables(results, resamples=50)
    rows = {r[0]: r[1] for r in table.rows}
    assert rows["lora"] == "25.0 ± 0.0 (n=2)"  # no marker
    assert "No p-value for lora on cb: example 0 has another gold answer" in table.caption


def test_a_changed_predictions_file_is_not_used(sig_store, tmp_path):
    records = [json.loads(line) for line in sig_store.read_text().splitlines()]
    changed = next(r for r in records if r.get("predictions") and r["method"] == "prompt_tuning")
    (sig_store.parent / changed["predictions"]["path"]).write_bytes(gzip.compress(b'{"id": "0"}\n'))
    results = load([sig_store])
    (table,) = build_tables(results, resamples=100)
    row = next(r for r in table.rows if r[0] == "prompt_tuning")
    assert row[2] == "30.0 ± 0.0 (n=2)"  # the recorded scores, no p-value
    assert "sha256 differs from its results line" in markdown([table], results)


def test_no_predictions_no_reference_rows_and_no_p_values(tmp_path):
    a = run(tmp_path, "finetune", 0, predictions(range(30)))
    b = run(tmp_path, "prompt_tuning", 0, predictions(range(10)))
    for r in (a, b):
        del r["predictions"]  # an older store
    (table,) = build_tables(load([store(tmp_path, [a, b])]))
    assert [r[0] for r in table.rows] == ["finetune", "prompt_tuning"]
    assert "bootstrap" not in table.caption


def test_resampled_metric_states_equal_scoring_the_resample():
    """The merged-state shortcut gives, per resample, exactly the metric of the resampled examples."""
    rng = np.random.default_rng(1)
    n = 60

    def examples(rows):
        return Examples(tuple(map(str, range(len(rows)))), tuple(rows))

    cases = {
        ("accuracy", "f1_macro"): [
            {"gold": LABELS[rng.integers(3)], "pred": LABELS[rng.integers(3)]} for _ in range(n)
        ],
        ("multirc",): [
            {"gold": str(bool(rng.integers(2))), "pred": str(bool(rng.integers(2))), "group": f"q{i // 3}"}
            for i in range(n)
        ],  # fmt: skip
        ("record",): [
            {"gold": ["the Red Sox", "Red Sox"], "pred": ["Red Sox", "Boston", "the Sox"][rng.integers(3)]}
            for _ in range(n)
        ],  # fmt: skip
        ("entity_f1",): [
            {
                "gold": ["B-PER", "I-PER", "O", "B-LOC"],
                "pred": [["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "O", "O", "B-LOC"], ["O"] * 4][i % 3],
            }
            for i in range(n)
        ],  # fmt: skip
    }
    for metrics, rows in cases.items():
        scorer = Scorer(metrics, LABELS if "f1_macro" in metrics else ["False", "True"])
        ex = examples(rows)
        unit_list = units(ex)
        counts = rng.multinomial(len(unit_list), np.full(len(unit_list), 1 / len(unit_list)), size=5)
        fast = scorer.resampled(ex, unit_list, counts)
        for b, c in enumerate(counts):
            drawn = [dict(ex.rows[i], group=f"{k}") if "group" in ex.rows[i] else ex.rows[i]
                     for k, u in enumerate(np.repeat(np.arange(len(unit_list)), c)) for i in unit_list[u]]  # fmt: skip
            assert fast[b] == pytest.approx(scorer.score(examples(drawn)), abs=1e-6), metrics


def test_majority_and_ensemble_by_hand():
    ex = Examples(("a", "b", "c"), ({"gold": "x", "pred": "y"}, {"gold": "x", "pred": "x"}, {"gold": "y", "pred": "y"}))
    assert [r["pred"] for r in majority(ex, "classification").rows] == ["x", "x", "x"]
    assert majority(ex, "choice") is None  # answers are per example: no majority class
    tags = Examples(("s",), ({"gold": ["O", "B-PER", "O"], "pred": ["O", "O", "O"]},))
    assert majority(tags, "tagging").rows[0]["pred"] == ["O", "O", "O"]
    one = Examples(("a",), ({"gold": "x", "pred": "x", "scores": {"x": 0.6, "y": 0.4}},))
    two = Examples(("a",), ({"gold": "x", "pred": "y", "scores": {"x": 0.0, "y": 0.9}},))
    assert ensemble([one, two]).rows[0]["pred"] == "y"  # means x 0.3, y 0.65
