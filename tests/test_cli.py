"""``promptscale eval / predict / export`` on finished runs, and W&B runs as a sweep leaves them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FAST
from promptscale.predictions import read_predictions, resolve_stored

DATA = os.environ.get("PROMPTSCALE_DATA_DIR")


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "promptscale.cli", *map(str, args)],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(sample_data, tmp_path_factory):
    """A prompt-tuning run on CB (tiny-gpt2, 2 steps): its dir and results line."""
    from promptscale import train as train_mod

    out_dir = tmp_path_factory.mktemp("finished") / "run"
    cfg = train_mod.compose([*FAST, f"data.dir={sample_data}", "task=cb", "method=prompt_tuning"])
    record = train_mod.run(cfg, out_dir, out_dir / "results.jsonl")
    return out_dir, record


# ---- eval ------------------------------------------------------------------------------------
def test_eval_of_a_finished_run_reproduces_its_predictions_without_training(finished_run):
    run_dir, trained = finished_run
    proc = cli("eval", run_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = run_dir / "eval" / "results.jsonl"
    (record,) = _lines(results)
    assert (record["status"], record["kind"], record["of"]) == ("finished", "eval", trained["config_hash"])
    assert record["config_hash"] != trained["config_hash"] and record["eval_split"] == "val"
    assert "train_steps" not in record and record["metrics"] == trained["metrics"]
    # the rebuilt run predicts exactly what the run itself did, byte for byte
    assert record["predictions"]["sha256"] == trained["predictions"]["sha256"]
    assert resolve_stored(record["predictions"]["path"], results).is_file()
    again = cli("eval", run_dir)  # the same evaluation again: skipped, not doubled
    assert again.returncode == 0 and "already in" in again.stdout and len(_lines(results)) == 1


def test_eval_on_another_split_and_on_a_file(finished_run, sample_data, tmp_path):
    run_dir, trained = finished_run
    out = tmp_path / "evals.jsonl"
    assert cli("eval", run_dir, "data.eval_split=dev32", "data.eval_size=null", "--results", out).returncode == 0
    dev32 = sample_data / "fewglue" / "CB" / "dev32.jsonl"
    file = tmp_path / "mine.jsonl"
    file.write_text("".join(dev32.read_text().splitlines(keepends=True)[:5]))
    proc = cli("eval", run_dir, "--file", file, "--results", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    split, own = _lines(out)
    assert split["eval_split"] == "dev32" and split["eval_examples"] == len(dev32.read_text().splitlines())
    assert own["eval_file"] == str(file.resolve()) and own["eval_examples"] == 5
    assert len({split["config_hash"], own["config_hash"], trained["config_hash"]}) == 3
    rows = read_predictions(resolve_stored(own["predictions"]["path"], out))
    assert [r["id"] for r in rows] == [str(json.loads(line)["idx"]) for line in file.read_text().splitlines()]


@pytest.mark.parametrize(
    "overrides",
    [
        ["task=conll03", "method=ptuning_v2"],  # prefixes + a token head
        ["task=copa", "method=lora"],  # merged after training, rebuilt unmerged then merged
        ["task=cb", "method=icl", "method.shots=2"],  # nothing trained: demonstrations from the train split
    ],
)
def test_eval_rebuilds_every_kind_of_run_to_identical_predictions(train, tmp_path, overrides):
    trained = train(overrides, tmp_path)
    proc = cli("eval", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = _lines(tmp_path / "run" / "eval" / "results.jsonl")
    assert record["predictions"]["sha256"] == trained["predictions"]["sha256"]
    assert record["metrics"] == trained["metrics"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["method.lr=3"], "may change only data"),
        (["data.eval_size=abc"], "data.eval_size='abc': expected int"),
        (["data.nope=1"], "data.nope: no such key"),
        (["data.eval_split=nope"], "unknown split 'nope'"),
        (["--file", "{tmp}/missing.jsonl"], "missing.jsonl: file not found"),
    ],
)
def test_eval_bad_input_is_one_line_before_any_model(finished_run, tmp_path, args, message):
    run_dir, _ = finished_run
    proc = cli("eval", run_dir, *(a.format(tmp=tmp_path) for a in args))
    assert proc.returncode == 2 and message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("promptscale: error:")
    assert not (run_dir / "eval" / "results.jsonl").exists() or all(
        r["kind"] == "eval" for r in _lines(run_dir / "eval" / "results.jsonl")
    )


def test_eval_of_something_that_is_not_a_run(tmp_path):
    proc = cli("eval", tmp_path)
    assert proc.returncode == 2 and "no weights-*.safetensors" in proc.stderr


# ---- predict --------------------------------------------------------------------------------
def test_predict_on_unlabeled_inputs(finished_run, tmp_path):
    run_dir, _ = finished_run
    file = tmp_path / "new.jsonl"
    file.write_text(
        json.dumps({"idx": 7, "premise": "A cat sat on the mat.", "hypothesis": "A cat sat."})
        + "\n"
        + json.dumps({"idx": 8, "premise": "It rained.", "hypothesis": "The street is dry."})
        + "\n"
    )
    out = tmp_path / "out" / "predictions.jsonl.gz"
    proc = cli("predict", run_dir, file, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_predictions(out)
    assert [r["id"] for r in rows] == ["7", "8"] and all(r["gold"] is None for r in rows)
    assert all(r["pred"] in ("entailment", "contradiction", "neutral") for r in rows)
    # eval refuses unlabeled records instead of scoring them as wrong
    proc = cli("eval", run_dir, "--file", file, "--results", tmp_path / "r.jsonl")
    assert proc.returncode == 2 and "2 unlabeled record(s)" in proc.stderr


# ---- export ---------------------------------------------------------------------------------
def test_export_loads_with_peft_and_prepends_the_trained_prompt(finished_run, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    from promptscale.models import load_backbone
    from promptscale.train import compose

    run_dir, _ = finished_run
    proc = cli("export", run_dir, "--peft", tmp_path / "peft")
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = load_backbone(compose(["model=tiny-gpt2"]).model).model
    peft_model = PeftModel.from_pretrained(model, str(tmp_path / "peft"))
    (weights,) = run_dir.glob("weights-*.safetensors")
    trained = load_file(str(weights))["prompt"]
    assert torch.equal(peft_model.get_prompt_embedding_to_save("default"), trained)


def test_export_of_a_method_without_peft_format(train, tmp_path):
    train(["task=cb", "method=adapter"], tmp_path)
    proc = cli("export", tmp_path / "run", "--peft", tmp_path / "peft")
    assert proc.returncode == 2 and "has no PEFT format" in proc.stderr


@pytest.mark.integration
@pytest.mark.skipif(not DATA, reason="PROMPTSCALE_DATA_DIR not set")
def test_smollm2_run_evaluates_on_dev32_and_exports_for_the_hub_model(tmp_path):
    """The issue's check: a few steps on SmolLM2-135M; eval on dev32 writes predictions and a line
    without training; the PEFT export names the hub id and loads onto that architecture."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    from promptscale.models import packaged_dir
    from promptscale.train import compose, run

    cfg = compose(
        ["model=smollm2-135m", "task=cb", "method=prompt_tuning", "method.prompt_length=4", "logger=none",
         "trainer.max_steps=2", "trainer.enable_progress_bar=false", "data.batch_size=2", "data.max_length=96",
         "data.eval_size=8", f"data.dir={DATA}"]
    )  # fmt: skip
    run_dir = tmp_path / "run"
    trained = run(cfg, run_dir, run_dir / "results.jsonl")
    proc = cli("eval", run_dir, "data.eval_split=dev32")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = _lines(run_dir / "eval" / "results.jsonl")
    assert record["of"] == trained["config_hash"] and record["eval_split"] == "dev32"
    assert len(read_predictions(resolve_stored(record["predictions"]["path"], run_dir / "eval" / "x"))) == 8
    assert cli("export", run_dir, "--peft", tmp_path / "peft").returncode == 0
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # the hub is unreachable here: the architecture comes from the packaged model's config
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(packaged_dir("smollm2-135m")))
    peft_model = PeftModel.from_pretrained(model, str(tmp_path / "peft"))
    assert peft_model.peft_config["default"].num_virtual_tokens == 4


# ---- W&B ------------------------------------------------------------------------------------
@pytest.fixture
def wandb_runs(monkeypatch) -> list[dict]:
    """Every W&B run started in this process, as wandb itself reports it after ``wandb.init``
    (id, name, group, tags, config), with the ``trainer/global_step`` of each row that logs eval
    metrics. wandb 0.31 has no Python reader for its offline ``.wandb`` files (its core reads
    them), so the runs are observed when they are made rather than parsed from disk."""
    import wandb

    runs: list[dict] = []
    real_init = wandb.init

    def init(*args, **kwargs):
        run = real_init(*args, **kwargs)
        entry = {"id": run.id, "name": run.name, "group": run.group, "tags": list(run.tags)}
        entry.update(swept=dict(run.config).get("swept"), eval_steps=[])
        real_log = run.log

        def log(data, *a, **k):
            if any(key.startswith("eval/") for key in data):
                entry["eval_steps"].append(data["trainer/global_step"])
            return real_log(data, *a, **k)

        run.log = log
        runs.append(entry)
        return run

    monkeypatch.setattr(wandb, "init", init)
    return runs


def _run_id(folder: Path) -> str:
    """An offline run folder is named offline-run-<time>-<run id>."""
    return folder.name.rsplit("-", 1)[1]


def test_sweep_runs_grouped_named_tagged_and_eval_logged_at_the_last_step(
    sample_data, tmp_path, monkeypatch, wandb_runs
):
    from promptscale import train as train_mod

    sweep = tmp_path / "my-sweep"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys, "argv",
        ["promptscale-train", "--multirun", "method.prompt_length=2,4", "task=cb", f"data.dir={sample_data}",
         "logger=wandb", "trainer.max_steps=3", "trainer.enable_progress_bar=false", "data.train_size=8",
         "data.eval_size=8", f"hydra.sweep.dir={sweep}"],
    )  # fmt: skip
    train_mod.main()
    runs = wandb_runs
    assert [r["name"] for r in runs] == ["method.prompt_length=2", "method.prompt_length=4"]
    assert {r["group"] for r in runs} == {"my-sweep"}
    assert all(f"method.prompt_length={r['swept']['method.prompt_length']}" in r["tags"] for r in runs)
    assert all(r["eval_steps"] == [3] for r in runs)  # the fit's last step, not the evaluator's 0
    folders = sorted(sweep.glob("*/wandb/offline-run-*"))
    assert sorted(map(_run_id, folders)) == sorted(r["id"] for r in runs)
    dry = subprocess.run(
        [str(Path(sys.executable).parent / "wandb"), "sync", "--dry-run", *folders],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )  # fmt: skip
    assert "Would sync 2 run(s)" in dry.stdout + dry.stderr


def test_rerun_in_the_same_run_dir_continues_the_same_wandb_run(train, tmp_path):
    first = train(["task=cb", "logger=wandb"], tmp_path)
    train(["task=cb", "logger=wandb", "skip_finished=false"], tmp_path)  # as a resumed job would
    wandb_dir = tmp_path / "run" / "wandb"
    (current,) = wandb_dir.glob("offline-run-*")
    (earlier,) = (wandb_dir / "superseded").glob("offline-run-*")
    assert _run_id(current) == _run_id(earlier)  # one W&B run per config and run dir
    other = train(["task=cb", "logger=wandb", "seed=1"], tmp_path / "other")
    assert other["config_hash"] != first["config_hash"]
    (third,) = (tmp_path / "other" / "run" / "wandb").glob("offline-run-*")
    assert _run_id(third) != _run_id(current)
