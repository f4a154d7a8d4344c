"""Reliability (issue 8): resumable and deterministic runs, results never lost or doubled,
tracking that never costs a run, safe loading and no secrets in anything written.

Kept fast: tiny-gpt2 (it has dropout, so the RNG matters), 8 training examples in batches of 2
(4 batches an epoch), 6 steps with a resume checkpoint every 2."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import FAST, TRAIN_CLI

# 6 steps over 4-batch epochs: periodic checkpoints at 2, 4 (an epoch end) and 6
RESUME = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "task=rte",
    "model=tiny-gpt2",
    "method=prompt_tuning",
    "method.prompt_length=4",
    "trainer.max_steps=6",
    "data.train_size=8",
    "data.eval_size=8",
    "data.batch_size=2",
    "checkpoint_every_n_steps=2",
    "keep_checkpoint=true",
]


class Order(L.Callback):
    """Which examples each step trains on, one JSON line per batch (appended, so that a killed
    process leaves what it saw); and the module, for its trained weights."""

    def __init__(self, path: Path | None = None):
        self.path, self.steps, self.module = path, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.module = pl_module
        step = {"step": trainer.global_step, "idx": batch["idx"].tolist()}
        self.steps.append(step)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(step) + "\n")


def run_in_process(overrides, out_dir: Path, data_dir: Path, callbacks=()) -> dict:
    """What ``promptscale-train <overrides> hydra.run.dir=<out_dir>`` does, in this process."""
    from promptscale import train as T

    cfg = T.compose([*overrides, f"data.dir={data_dir}"])
    return T.run(cfg, out_dir, out_dir / "results.jsonl", callbacks=callbacks)


def trainable(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters() if v.requires_grad}


# The real CLI, with a callback that records the data order and, at a chosen step, either kills
# the process (SIGKILL: nothing runs after it) or waits there for the test's SIGTERM.
DRIVER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import lightning as L
    from promptscale import train as T

    record, kill_at, wait_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    class Driver(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            with open(record, "a") as f:
                f.write(json.dumps({"step": trainer.global_step, "idx": batch["idx"].tolist()}) + "\\n")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if trainer.global_step == wait_at:
                open(record + ".waiting", "w").close()
                deadline = time.time() + 120
                while not trainer.received_sigterm and time.time() < deadline:
                    time.sleep(0.05)

    original = T.trainer_kwargs
    T.trainer_kwargs = lambda cfg: {**original(cfg), "callbacks": [Driver()]}
    sys.argv = ["promptscale-train", *sys.argv[4:]]
    T.main()
    """
)


def cli(tmp_path, record: Path, overrides, kill_at=-1, wait_at=-1) -> subprocess.Popen:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return subprocess.Popen(
        [sys.executable, str(driver), str(record), str(kill_at), str(wait_at), *overrides],
        cwd=tmp_path, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def steps(path: Path) -> dict[int, list[int]]:
    """step -> examples, the latest run's when a step was trained twice (before a kill and after)."""
    return {s["step"]: s["idx"] for s in map(json.loads, path.read_text().splitlines())}


# ---- resume after SIGKILL and after SIGTERM ---------------------------------------------------


def test_resume_after_sigkill_and_sigterm_equals_uninterrupted(sample_data, tmp_path, monkeypatch):
    from promptscale.resume import resume_checkpoint_path

    # uninterrupted
    order = Order()
    clean = run_in_process(RESUME, tmp_path / "clean", sample_data, [order])
    assert clean["train_steps"] == 6
    clean_ckpt = next((tmp_path / "clean" / "checkpoints").glob("resume-*.ckpt"))
    clean_order = {s["step"]: s["idx"] for s in order.steps}
    assert len(clean_order) == 6 and clean_order[0] != clean_order[4]  # epochs are shuffled anew

    run_dir, record = tmp_path / "run", tmp_path / "order.jsonl"
    command = [*RESUME, f"data.dir={sample_data}", f"hydra.run.dir={run_dir}"]
    ckpt = resume_checkpoint_path(run_dir, clean["config_hash"])

    # 1. SIGKILL after step 5: nothing recorded, the checkpoint of step 4 (an epoch's end) stays
    proc = cli(tmp_path, record, command, kill_at=5)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    assert not (run_dir / "results.jsonl").exists()
    assert torch.load(ckpt, weights_only=True)["global_step"] == 4

    # 2. the same command resumes at step 4; SIGTERM after step 5 saves step 5 and exits 143
    proc = cli(tmp_path, record, command, wait_at=5)
    waiting = Path(f"{record}.waiting")
    deadline = time.time() + 300
    while not waiting.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert waiting.exists(), proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert f"promptscale: resuming from {ckpt}" in out
    assert [line for line in err.splitlines() if line.startswith("promptscale:")] == [
        f"promptscale: preempted: stopped by SIGTERM at step 5; resume checkpoint at step 5: {ckpt}; "
        "the same command resumes it"
    ]
    assert not (run_dir / "results.jsonl").exists()  # preempted is not failed: no line
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == 5
    assert set(state["state_dict"]) == {"prompt"}  # frozen backbone: trainable weights only

    # 3. resumed once more (in this process, to watch how it loads): every load is weights_only
    loads = []
    real_load = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    resumed_order = Order(record)
    resumed = run_in_process(RESUME, run_dir, sample_data, [resumed_order])
    monkeypatch.undo()
    assert loads and all(w is True for w in loads)
    assert [s["step"] for s in resumed_order.steps] == [5]

    assert resumed["metrics"] == clean["metrics"] and resumed["score"] == clean["score"]
    assert resumed["train_steps"] == 6 and resumed["config_hash"] == clean["config_hash"]
    assert steps(record) == clean_order  # the data order after each resume is the uninterrupted one
    final, expected = torch.load(ckpt, weights_only=True), torch.load(clean_ckpt, weights_only=True)
    assert final["global_step"] == expected["global_step"] == 6
    assert set(final["state_dict"]) == {"prompt"}
    assert torch.equal(final["state_dict"]["prompt"], expected["state_dict"]["prompt"])  # bit for bit
    assert torch.equal(final["state_dict"]["prompt"], trainable(order.module)["prompt"])
    assert [json.loads(x)["status"] for x in (run_dir / "results.jsonl").read_text().splitlines()] == ["finished"]


def test_finished_run_deletes_its_checkpoint_and_another_config_ignores_one(train, sample_data, tmp_path):
    from promptscale.resume import resume_checkpoint_path

    overrides = ["trainer.max_steps=2", "checkpoint_every_n_steps=1"]
    record = train(overrides, tmp_path)
    run_dir = tmp_path / "run"
    assert not resume_checkpoint_path(run_dir, record["config_hash"]).exists()  # keep_checkpoint=false
    assert not list((run_dir / "checkpoints").glob("*.ckpt"))
    # a checkpoint of another config in the same run dir is not resumed from
    kept = train([*overrides, "keep_checkpoint=true", "seed=5"], tmp_path)
    other = train([*overrides, "seed=6"], tmp_path)
    assert other["train_steps"] == 2 and other["config_hash"] != kept["config_hash"]
    assert resume_checkpoint_path(run_dir, kept["config_hash"]).exists()


def test_submitit_preemption_signal_saves_before_submitit_requeues(sample_data, tmp_path):
    """Under submitit, USR2 means "preempted / timing out": submitit's handler requeues the job
    and exits. It is held until the running batch ends, a checkpoint is saved, then handed on."""
    calls = []

    def submitit_handler(signum, frame):  # stands in for submitit's checkpoint_and_try_requeue
        path = next((tmp_path / "run" / "checkpoints").glob("resume-*.ckpt"))
        calls.append(torch.load(path, weights_only=True)["global_step"])
        sys.exit(-1)

    class Preempt(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                os.kill(os.getpid(), signal.SIGUSR2)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with pytest.raises(SystemExit):
            run_in_process(RESUME, tmp_path / "run", sample_data, [Preempt()])
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert calls == [3]  # saved at step 3 (not a periodic step) before submitit ran
    assert not (tmp_path / "run" / "results.jsonl").exists()
    assert list((tmp_path / "run" / "checkpoints").glob("resume-*.ckpt"))


# ---- determinism ----------------------------------------------------------------------------


def test_same_seed_same_run_other_seed_differs(sample_data, tmp_path):
    from promptscale.data.datamodule import TaskDataModule
    from promptscale.train import compose

    overrides = [o for o in RESUME if not o.startswith(("checkpoint_every", "keep_checkpoint"))]
    runs = []
    for i, seed in enumerate((0, 0, 1)):
        order = Order()
        record = run_in_process([*overrides, f"seed={seed}"], tmp_path / str(i), sample_data, [order])
        runs.append((record, [s["idx"] for s in order.steps], trainable(order.module)))
    (a, order_a, w_a), (b, order_b, w_b), (c, order_c, w_c) = runs
    assert a["metrics"] == b["metrics"] and order_a == order_b
    assert w_a.keys() == w_b.keys() and all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    assert order_a != order_c
    assert not torch.equal(w_a["prompt"], w_c["prompt"])

    # subsampling and prompt init follow the seed too
    def subsample(seed):
        cfg = compose([*FAST, f"data.dir={sample_data}", f"seed={seed}"])
        data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
        data.read()
        return [e.guid for e in data.train_examples]

    assert subsample(0) == subsample(0) != subsample(1)


# ---- results never lost or doubled ------------------------------------------------------------


def _append_many(path: str, writer: int, n: int) -> None:
    from promptscale.results import append_result

    for i in range(n):  # ~64 KiB lines: far above a pipe's atomic write size
        append_result(Path(path), {"writer": writer, "i": i, "pad": str(writer) * 65536})


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "results.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 25)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 6 * 25
    assert sorted((r["writer"], r["i"]) for r in records) == [(w, i) for w in range(6) for i in range(25)]
    assert all(r["pad"] == str(r["writer"]) * 65536 for r in records)


def test_submitit_local_sweep_gives_one_intact_line_per_job(sample_data, tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            TRAIN_CLI, "--multirun", "hydra/launcher=submitit_local", "seed=0,1,2", f"data.dir={sample_data}",
            "logger=none", "trainer.max_steps=1", "trainer.enable_progress_bar=false", "data.train_size=4",
            "data.eval_size=4", f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path, env=os.environ.copy(), capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (sweep / "results.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in records) == [0, 1, 2]
    assert all(r["status"] == "finished" for r in records)
    assert len({r["config_hash"] for r in records}) == 3
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 3  # each job its own process


def test_finished_config_is_skipped_not_doubled(train, tmp_path, monkeypatch):
    first = train([], tmp_path)
    import promptscale.models

    monkeypatch.setattr(promptscale.models, "load_backbone", lambda cfg: pytest.fail("loaded a model again"))
    again = train([], tmp_path)
    assert again == first
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 1


def test_failing_run_writes_a_failed_line_then_a_rerun_finishes(train, tmp_path, monkeypatch):
    from promptscale.methods.base import AdaptationModule

    def boom(self, batch, batch_idx):
        raise RuntimeError("boom in training")

    with monkeypatch.context() as m:
        m.setattr(AdaptationModule, "training_step", boom)
        with pytest.raises(RuntimeError, match="boom in training"):
            train([], tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 1
    assert lines[0]["status"] == "failed" and lines[0]["error"] == "RuntimeError: boom in training"
    assert lines[0]["method"] == "prompt_tuning" and lines[0]["config"]["seed"] == 0
    record = train([], tmp_path)  # a failed line does not count as finished
    statuses = [json.loads(x)["status"] for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert statuses == ["failed", "finished"] and record["config_hash"] == lines[0]["config_hash"]


# ---- tracking failures don't kill runs ----------------------------------------------------------


def test_wandb_that_cannot_start_falls_back_to_csv(train, tmp_path, monkeypatch, capsys):
    import wandb

    def cannot_start(*args, **kwargs):
        raise wandb.errors.CommError("network is unreachable")

    monkeypatch.setattr(wandb, "init", cannot_start)
    record = train(["logger=wandb"], tmp_path)
    assert record["status"] == "finished"
    said = [line for line in capsys.readouterr().err.splitlines() if "W&B" in line]
    assert len(said) == 1 and "could not start" in said[0] and "network is unreachable" in said[0]
    assert list((tmp_path / "run" / "csv").rglob("metrics.csv"))
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 1


def test_wandb_that_fails_mid_run_is_dropped_once(train, tmp_path, monkeypatch, capsys):
    from wandb.sdk.wandb_run import Run

    calls = []

    def disk_full(self, *args, **kwargs):
        calls.append(1)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Run, "log", disk_full)
    record = train(["logger=wandb", "trainer.log_every_n_steps=1", "trainer.max_steps=3"], tmp_path)
    assert record["status"] == "finished" and record["train_steps"] == 3
    assert len(calls) == 1  # disabled after the first failure
    said = [line for line in capsys.readouterr().err.splitlines() if "W&B" in line]
    assert len(said) == 1 and "stopped working" in said[0] and "No space left on device" in said[0]
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 1


# ---- safe loading and secrets --------------------------------------------------------------------


def test_hub_models_load_without_remote_code_unless_asked(monkeypatch):
    import transformers

    from promptscale.models import load_backbone
    from promptscale.train import compose

    seen = []

    class Stop(Exception):
        pass

    class Tokenizer:
        pad_token = eos_token = "x"

    def fake(name, result=None):
        def from_pretrained(path, *args, **kwargs):
            seen.append((name, kwargs.get("trust_remote_code"), kwargs.get("weights_only", True)))
            if result is None:
                raise Stop  # the weights are never fetched
            return result

        return from_pretrained

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake("tokenizer", Tokenizer()))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake("model"))
    for overrides, remote in (([], False), (["model.trust_remote_code=true"], True)):
        seen.clear()
        with pytest.raises(Stop):
            load_backbone(compose(["model=gpt2", *overrides]).model)
        # weights_only: transformers' default (True) for any .bin; safetensors need no pickle
        assert seen == [("tokenizer", remote, True), ("model", remote, True)]


def test_checkpoints_are_written_whole_and_read_weights_only(tmp_path):
    from promptscale.resume import SafeCheckpointIO

    io = SafeCheckpointIO()
    path = tmp_path / "c" / "x.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "step": 1}, path)
    assert io.load_checkpoint(path)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["x.ckpt"]  # no temp file left

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"state_dict": {}, "evil": Evil()}, path, _use_new_zipfile_serialization=True)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported global"):
        io.load_checkpoint(path)


def test_secret_names_and_redaction():
    from promptscale.results import REDACTED, is_secret_name, redact, secret_values

    assert all(map(is_secret_name, ["api_key", "HF_TOKEN", "WANDB_API_KEY", "db.password", "AWS_SECRET_ACCESS_KEY"]))
    assert not any(
        map(is_secret_name, ["tokenizer", "max_tokens", "TOKENIZERS_PARALLELISM", "keep_checkpoint", "monkey"])
    )
    env = {"HF_TOKEN": "hf_abcdefghijkl", "WANDB_API_KEY": "short", "HOME": "/home/someone"}
    config = {"model": {"arch_kwargs": {"api_key": "sk-0123456789"}}, "tokenizer": "bpe-tokenizer"}
    assert secret_values(env, config) == ["hf_abcdefghijkl", "sk-0123456789"]
    out = redact(
        {"a": ["x/hf_abcdefghijkl/y", 3, None], "password": "hunter22", "tokenizer": "bpe"}, ["hf_abcdefghijkl"]
    )
    assert out == {"a": [f"x/{REDACTED}/y", 3, None], "password": REDACTED, "tokenizer": "bpe"}


def test_secrets_appear_in_nothing_written(sample_data, tmp_path, monkeypatch):
    import shutil

    token, api_key = "hf_PLANTEDfakeTOKEN0123456789", "0123456789abcdefPLANTEDfakeWANDBkey0123"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("WANDB_API_KEY", api_key)
    data_dir = tmp_path / f"data-{token}"  # a path that holds the token ends up in the config
    shutil.copytree(sample_data, data_dir)
    monkeypatch.setattr(sys, "argv", ["promptscale-train", f"data.dir={data_dir}", f"+x={api_key}"])
    out_dir = tmp_path / "run"
    overrides = [o for o in RESUME if o != "logger=none"] + [
        "logger=wandb",
        "trainer.max_steps=2",
        "checkpoint_every_n_steps=1",
    ]
    record = run_in_process(overrides, out_dir, data_dir)
    assert record["config"]["data"]["dir"] == str(tmp_path / "data-<redacted>")
    assert list(out_dir.glob("checkpoints/*.ckpt")) and list(out_dir.glob("wandb/offline-run-*/*.wandb"))
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    assert len(files) > 5
    for path in files:
        content = path.read_bytes()
        for secret in (token, api_key):
            assert secret.encode() not in content, f"{secret} written into {path.relative_to(out_dir)}"


def test_hydra_saved_overrides_are_scrubbed(tmp_path):
    from promptscale.train import _scrub_hydra_files

    secret = "hf_PLANTEDfakeTOKEN0123456789"
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(f"- data.dir=/x/{secret}/y\n")
    (tmp_path / "multirun.yaml").write_text(f"dir: {secret}\n")
    _scrub_hydra_files(tmp_path, [secret])
    assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == "- data.dir=/x/<redacted>/y\n"
    assert (tmp_path / "multirun.yaml").read_text() == "dir: <redacted>\n"


def test_the_config_is_read_only_once_checked(train, tmp_path):
    """A write into the config after the checks (here a callback's, mid-training) fails the run:
    the results line's config is the one that ran."""
    import lightning as L
    from omegaconf.errors import ReadonlyConfigError

    class Rewrites(L.Callback):
        def on_train_start(self, trainer, module):
            module.cfg.method.lr = 1.0

    with pytest.raises(ReadonlyConfigError, match="method.lr"):
        train(["method=lora", "model=tiny-llama"], tmp_path, [Rewrites()])
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == "failed"
