"""Per-example predictions beside each run, and the trainable weights it keeps (promptscale.predictions)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
import torch

from promptscale.data.example import Example
from promptscale.errors import ConfigError
from promptscale.predictions import (
    prediction_records,
    predictions_path,
    read_predictions,
    read_weights_metadata,
    resolve_stored,
    stored_path,
    weights_path,
    write_predictions,
)


def _results(tmp_path: Path) -> Path:
    return tmp_path / "run" / "results.jsonl"


def _check_file(record: dict, results_file: Path) -> list[dict]:
    """The results line's predictions entry names a gzip file whose bytes have its digest."""
    entry = record["predictions"]
    assert not Path(entry["path"]).is_absolute()  # inside the results file's folder: relative
    path = resolve_stored(entry["path"], results_file)
    data = path.read_bytes()
    assert data[:2] == b"\x1f\x8b" and hashlib.sha256(data).hexdigest() == entry["sha256"]
    rows = read_predictions(path)
    assert len(rows) == entry["n"]
    return rows


# ---- what a finished run writes, per task type -----------------------------------------------
@pytest.mark.parametrize(
    "task, method",
    [("cb", "prompt_tuning"), ("copa", "lora"), ("multirc", "adapter"), ("record", "prompt_tuning")],
)
def test_predictions_per_example_match_the_metrics(train, tmp_path, task, method):
    record = train([f"task={task}", f"method={method}"], tmp_path)
    rows = _check_file(record, _results(tmp_path))
    stored = json.loads(_results(tmp_path).read_text().splitlines()[-1])
    assert stored["predictions"] == record["predictions"]
    assert len({r["id"] for r in rows}) == len(rows) == 8  # data.eval_size=8
    for r in rows:
        assert set(r) >= {"id", "gold", "pred", "scores"} and isinstance(r["id"], str)
        assert r["pred"] == max(r["scores"], key=r["scores"].get)  # the prediction is the best-scored candidate
    if task == "multirc":
        assert all(isinstance(r["group"], str) for r in rows)
    elif task == "record":
        assert all(isinstance(r["gold"], list) for r in rows)  # the accepted answers
        assert all(r["pred"] in r["scores"] for r in rows)  # candidates are the passage's entities
    else:  # accuracy recomputed from the file is the run's metric
        accuracy = sum(r["pred"] == r["gold"] for r in rows) / len(rows)
        assert accuracy == pytest.approx(record["metrics"]["accuracy"])
    if task == "cb":
        assert all(set(r["scores"]) == {"entailment", "contradiction", "neutral"} for r in rows)


def test_tagging_predictions_are_tags_per_word(train, tmp_path):
    record = train(["task=conll03", "method=ptuning_v2"], tmp_path)
    rows = _check_file(record, _results(tmp_path))
    assert rows and all("scores" not in r for r in rows)
    assert all(len(r["pred"]) == len(r["gold"]) and isinstance(r["gold"][0], str) for r in rows)


def test_same_run_twice_gives_identical_predictions_file(train, tmp_path):
    a = train(["task=cb"], tmp_path / "a")
    b = train(["task=cb"], tmp_path / "b")
    assert a["predictions"]["sha256"] == b["predictions"]["sha256"]  # gzip header without a timestamp


# ---- weights ------------------------------------------------------------------------------------
def test_frozen_backbone_run_keeps_its_trainable_weights_with_its_config(train, tmp_path):
    from safetensors.torch import load_file

    record = train(["task=cb", "method=prefix_tuning"], tmp_path)
    path = resolve_stored(record["weights"]["path"], _results(tmp_path))
    assert (
        path == weights_path(path.parent, record["config_hash"]) and path.stat().st_size == record["weights"]["bytes"]
    )
    tensors = load_file(str(path))
    assert set(tensors) == {"deep_prompt.prefix"}  # folded: the reparameterization MLP is gone
    assert sum(t.numel() for t in tensors.values()) == record["kept_params"]
    config, key = read_weights_metadata(path)
    assert key == record["config_hash"] and config["method"]["name"] == "prefix_tuning"


def test_finetune_keeps_weights_only_behind_the_flag(train, tmp_path):
    record = train(["task=cb", "method=finetune"], tmp_path / "off")
    assert record["weights"] is None and not list((tmp_path / "off" / "run").glob("weights-*"))
    assert record["predictions"]["n"] == 8
    record = train(["task=cb", "method=finetune", "keep_lm_weights=true"], tmp_path / "on")
    assert record["weights"]["bytes"] > 4 * record["kept_params"] * 0.9


def test_tuning_free_run_keeps_an_empty_weights_file(train, tmp_path):
    from safetensors.torch import load_file

    record = train(["task=cb", "method=icl", "method.shots=1"], tmp_path)
    path = resolve_stored(record["weights"]["path"], _results(tmp_path))
    assert load_file(str(path)) == {} and read_weights_metadata(path)[1] == record["config_hash"]


def test_keep_lm_weights_is_not_part_of_the_config_hash(train, tmp_path):
    from promptscale.results import config_hash
    from promptscale.train import compose

    def key(extra):
        from omegaconf import OmegaConf

        return config_hash(OmegaConf.to_container(compose(["task=cb", *extra]), resolve=True))

    assert key([]) == key(["keep_lm_weights=true"])


def test_not_a_weights_file_is_one_line(tmp_path):
    bad = tmp_path / "weights.safetensors"
    bad.write_text("not tensors")
    with pytest.raises(ConfigError, match="not a promptscale weights file"):
        read_weights_metadata(bad)


# ---- the records themselves, by hand -----------------------------------------------------------
class _Task(dict):
    __getattr__ = dict.__getitem__


def test_records_by_hand():
    task = _Task(kind="classification", labels=["False", "True"])
    examples = [
        Example("a", {}, label=1, group="q1"),
        Example("b", {}, label=None, group="q1"),
    ]
    collected = [(torch.tensor([1]), torch.tensor([0]), torch.tensor([[-0.5, -1.5]]), None)]
    collected.append((torch.tensor([0]), torch.tensor([1]), torch.tensor([[-2.0, -0.25]]), None))
    collected.append((torch.tensor([1]), torch.tensor([0]), torch.tensor([[-0.5, -1.5]]), None))  # DDP's padded repeat
    assert prediction_records(task, examples, collected) == [
        {"id": "a", "gold": "True", "pred": "True", "scores": {"False": -2.0, "True": -0.25}, "group": "q1"},
        {"id": "b", "gold": None, "pred": "False", "scores": {"False": -0.5, "True": -1.5}, "group": "q1"},
    ]
    tagging = _Task(kind="tagging", labels=["O", "B-PER", "I-PER"])
    words = [Example("7", {}, tokens=["Ann", "Lee", "ran"], tags=["B-PER", "I-PER", "O"])]
    # the third word was past data.max_length (-1): predicted "O", as the metric counts it
    rows = prediction_records(tagging, words, [(torch.tensor([0]), torch.tensor([[1, 2, -1, -1]]), None, None)])
    assert rows == [{"id": "7", "gold": ["B-PER", "I-PER", "O"], "pred": ["B-PER", "I-PER", "O"]}]
    choice = _Task(kind="choice", labels=[])
    copa = [Example("3", {}, label=1, candidates=["x", "y"], gold=[1])]
    rows = prediction_records(
        choice, copa, [(torch.tensor([0]), torch.tensor([0]), torch.tensor([[-1.0, -3.0]]), None)]
    )
    assert rows == [{"id": "3", "gold": "y", "pred": "x", "scores": {"x": -1.0, "y": -3.0}}]
    # generated text (chain-of-thought) joins its example's record
    extras = [{"rationale": "Because.", "answer": " yes", "answered": True}]
    rows = prediction_records(task, examples[:1], [(torch.tensor([0]), torch.tensor([1]), None, extras)])
    assert rows == [{"id": "a", "gold": "True", "pred": "True", "group": "q1", **extras[0]}]


def test_write_is_gzip_jsonl_with_digest_and_paths(tmp_path):
    path = predictions_path(tmp_path / "sweep" / "0", "0123456789ab")
    rows = [{"id": "1", "gold": "é", "pred": "é", "scores": {"é": -0.1}}]
    written = write_predictions(path, rows)
    assert written == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "n": 1}
    assert json.loads(gzip.decompress(path.read_bytes())) == rows[0]
    assert not list(path.parent.glob(".*.tmp"))
    assert stored_path(path, tmp_path / "sweep" / "results.jsonl") == "0/predictions-0123456789ab.jsonl.gz"
    assert stored_path(path, tmp_path / "elsewhere" / "results.jsonl") == str(path.resolve())


def test_two_sweeps_in_one_sweep_dir_keep_each_runs_files(sample_data, tmp_path):
    """Job folder 0 of a second multirun in the same sweep dir is job folder 0 of the first: each
    run's predictions and weights are named by its config hash, so neither overwrites the other's
    and both lines' files still match their digests."""
    import os
    import subprocess

    from conftest import TRAIN_CLI
    from promptscale.files import file_sha256

    sweep = tmp_path / "sweep"
    common = [f"data.dir={sample_data}", "logger=none", "trainer.max_steps=1", "trainer.enable_progress_bar=false",
              "data.train_size=8", "data.eval_size=8", "method=prompt_tuning", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    for seed in ("0", "1"):
        proc = subprocess.run(
            [TRAIN_CLI, "--multirun", f"seed={seed}", *common],
            cwd=tmp_path, env=os.environ.copy(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (sweep / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and {r["output_dir"] for r in records} == {str(sweep / "0")}
    for record in records:
        for name in ("predictions", "weights"):
            path = resolve_stored(record[name]["path"], sweep / "results.jsonl")
            assert record["config_hash"] in path.name and path.is_file()
        assert (
            file_sha256(resolve_stored(record["predictions"]["path"], sweep / "results.jsonl"))
            == (record["predictions"]["sha256"])
        )
    # promptscale eval on the shared folder asks which run; on a file it rebuilds that run
    from promptscale.evaluate import weights_of

    with pytest.raises(ConfigError, match="holds the weights of 2 runs"):
        weights_of(sweep / "0")


def test_a_run_dir_from_before_per_run_names_still_evaluates(tmp_path):
    from promptscale.evaluate import weights_of

    (tmp_path / "weights.safetensors").write_bytes(b"")
    assert weights_of(tmp_path) == tmp_path / "weights.safetensors"
