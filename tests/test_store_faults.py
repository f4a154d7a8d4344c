"""Issue 13: the results store and the run's lifecycle under faults. Each case failed before:
an unwritable store (found after training), torn or garbage lines (every later run crashed),
two sweeps on one config (two finished lines), other data under the same hash, a corrupt resume
checkpoint (failed forever), a full disk (a traceback), NaN in config or metrics (a NaN line),
secrets in Hydra's files, PWD redacted, per-segment wall time and process-wide peak memory,
Ctrl-C exiting 1 silently, and bad input leaving a run dir behind."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import FAST, TRAIN_CLI


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def good(i: int = 0, **extra) -> str:
    return json.dumps({"status": "finished", "config_hash": f"h{i}", "score": 0.5, **extra}, sort_keys=True)


def run_with(sample_data, tmp_path, store: Path, overrides=(), callbacks=(), data_dir=None):
    """``promptscale.train.run`` in this process with the results store ``store``."""
    from promptscale import train as T

    cfg = T.compose([*FAST, f"data.dir={data_dir or sample_data}", *overrides])
    return T.run(cfg, tmp_path / "run", store, callbacks=callbacks)


# ---- item 2: a store or run dir that cannot be written fails before any model loads -------------


@pytest.mark.parametrize(
    "case, expected",
    [
        ("directory", "is a directory"),
        ("char device", "is not a regular file"),
        ("under a file", "cannot be written"),
        ("run dir under a file", "run dir"),
    ],
)
def test_unwritable_store_or_run_dir_fails_in_one_line_before_loading(case, expected, sample_data, tmp_path, no_model):
    from promptscale import train as T
    from promptscale.results import StoreError

    (tmp_path / "plain").write_text("x")
    (tmp_path / "store").mkdir()
    store = {"directory": tmp_path / "store", "char device": Path("/dev/full")}.get(
        case, tmp_path / "plain" / "results.jsonl"
    )
    out_dir = tmp_path / "plain" / "run" if case == "run dir under a file" else tmp_path / "run"
    if case == "run dir under a file":
        store = tmp_path / "results.jsonl"
    cfg = T.compose([*FAST, f"data.dir={sample_data}"])
    with pytest.raises(StoreError, match=expected) as err:
        T.run(cfg, out_dir, store)
    assert "\n" not in str(err.value)


def test_finished_result_that_cannot_be_appended_is_kept_beside_the_run(sample_data, tmp_path, monkeypatch):
    import promptscale.results as R
    from promptscale.resume import resume_checkpoint_path

    store = tmp_path / "results.jsonl"

    def full(path, record):
        raise R.no_space(path)

    # checkpoints every 50 steps: none would exist after 2 steps without the fallback
    with monkeypatch.context() as m:
        m.setattr(R, "append_result", full)
        with pytest.raises(R.StoreError, match="no space left on .*results.jsonl; the finished result is kept in"):
            run_with(sample_data, tmp_path, store, ["checkpoint_every_n_steps=50"])
    kept = list((tmp_path / "run").glob("result-*.json"))
    assert len(kept) == 1
    record = json.loads(kept[0].read_text())
    assert record["status"] == "finished" and record["train_steps"] == 2
    checkpoint = resume_checkpoint_path(tmp_path / "run", record["config_hash"])
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 2  # the trained weights
    # the same command stores it without training again (resumes at the end)
    steps = []

    class Count(L.Callback):
        def on_train_batch_start(self, *args):
            steps.append(1)

    again = run_with(sample_data, tmp_path, store, ["checkpoint_every_n_steps=50"], [Count()])
    assert steps == [] and again["metrics"] == record["metrics"]
    assert [json.loads(x)["status"] for x in lines(store)] == ["finished"]


# ---- items 3, 4: torn and garbage lines --------------------------------------------------------


@pytest.mark.parametrize(
    "bad, why",
    [
        ('{"status": "finished", "config_hash": "h9", "sco', "an incomplete last line"),  # torn tail
        ("garbage\n", "not a JSON object"),
        ('{"status": "finished", "score": NaN}\n', "not a JSON object"),
        (b"\xff\xfe{}\n", "not a JSON object"),  # not UTF-8
        ("[1, 2]\n", "not a JSON object"),
    ],
)
def test_readers_skip_a_bad_line_with_one_warning_and_writers_repair_a_torn_tail(bad, why, tmp_path, capsys):
    from promptscale.analysis.load import load
    from promptscale.results import append_result, finished_record, read_results

    store = tmp_path / "results.jsonl"
    bad = bad if isinstance(bad, bytes) else bad.encode()
    store.write_bytes((good(0) + "\n").encode() + bad)
    assert [r["config_hash"] for r in read_results(store)] == ["h0"]
    assert finished_record(store, "h0")["config_hash"] == "h0"
    warned = [x for x in capsys.readouterr().err.splitlines() if "warning" in x]
    assert warned == [f"promptscale: warning: {store}:2: skipped, {why}"] * 2
    assert [s for s in load([store]).skipped if s.startswith(f"{store}:2")]  # the table counts it
    capsys.readouterr()

    append_result(store, json.loads(good(1)))
    assert store.read_bytes().endswith((good(1) + "\n").encode())
    assert [r["config_hash"] for r in read_results(store)] == ["h0", "h1"]
    if why == "an incomplete last line":  # cut off and kept aside, said once
        assert store.read_text() == good(0) + "\n" + good(1) + "\n"
        assert (tmp_path / "results.jsonl.torn").read_bytes() == bad + b"\n"
        assert "cut off a torn last line" in capsys.readouterr().err


def _write_torn(path: str, size: int) -> None:
    """A writer killed mid-write of a ``size``-byte line: what SIGKILL leaves."""
    from promptscale.results import append_result

    real_write = os.write

    def write_half(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        os.kill(os.getpid(), 9)

    os.write = write_half
    append_result(Path(path), {"status": "finished", "config_hash": "torn", "pad": "x" * size})


@pytest.mark.parametrize("size", [4 << 10, 256 << 10, 4 << 20])
def test_a_writer_killed_mid_line_of_any_size_never_costs_another_line(size, tmp_path):
    from promptscale.results import append_result, read_results

    store = tmp_path / "results.jsonl"
    append_result(store, json.loads(good(0)))
    proc = multiprocessing.get_context("fork").Process(target=_write_torn, args=(str(store), size))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -9 and not store.read_bytes().endswith(b"\n")  # torn, lock released by death
    append_result(store, {"status": "finished", "config_hash": "h1", "pad": "y" * size})
    assert [r["config_hash"] for r in read_results(store)] == ["h0", "h1"]
    assert all(json.loads(line) for line in lines(store))  # every line intact


def test_a_failed_write_leaves_the_store_as_it_was_and_says_no_space(tmp_path, monkeypatch):
    import promptscale.results as R

    store = tmp_path / "results.jsonl"
    R.append_result(store, json.loads(good(0)))
    before = store.read_bytes()
    real_write = os.write

    def full(fd, data):
        real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(R.os, "write", full)
    with pytest.raises(R.StoreError, match=f"^no space left on {store}$"):
        R.append_result(store, json.loads(good(1)))
    assert store.read_bytes() == before


# ---- item 5: one config, two sweeps -----------------------------------------------------------


def _hold_claim(store: str, key: str, ready, done) -> None:
    from promptscale.results import Claim

    claim = Claim(Path(store), key)
    assert claim.acquire() is None
    ready.set()
    done.wait(60)


def test_a_config_being_run_elsewhere_is_skipped_and_a_crashed_claim_is_released(sample_data, tmp_path):
    from promptscale.results import Claim

    store = tmp_path / "results.jsonl"
    first = run_with(sample_data, tmp_path, store, ["skip_finished=false"])
    key = first["config_hash"]
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_claim, args=(str(store), key, ready, done))
    holder.start()
    assert ready.wait(30)
    try:
        second = run_with(sample_data, tmp_path, store, ["skip_finished=false"])  # another sweep, same config
        assert second["status"] == "running" and f"pid {holder.pid}" in second["claimed_by"]
        assert len(lines(store)) == 1
    finally:
        holder.kill()  # a crashed claimant: its lock goes with it
        holder.join()
    claim = Claim(store, key)
    assert claim.acquire() is None
    claim.release()


# ---- item 6: the data is part of the hash -------------------------------------------------------


def test_the_hash_covers_the_examples_read_not_their_path(sample_data, tmp_path, capsys):
    store = tmp_path / "results.jsonl"
    first = run_with(sample_data, tmp_path, store)
    moved = tmp_path / "moved"
    shutil.copytree(sample_data, moved)
    same = run_with(sample_data, tmp_path, store, data_dir=moved)  # same data elsewhere: finished
    assert same == first and "finished as" in capsys.readouterr().out
    flipped = tmp_path / "flipped"
    shutil.copytree(sample_data, flipped)
    for name in ("train.jsonl", "val.jsonl"):
        path = flipped / "fewglue" / "RTE" / name
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        for row in rows:
            row["label"] = {"entailment": "not_entailment", "not_entailment": "entailment"}[row["label"]]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    other = run_with(sample_data, tmp_path, store, data_dir=flipped)
    assert other["config_hash"] != first["config_hash"]
    assert other["config"]["data"]["fingerprint"] != first["config"]["data"]["fingerprint"]
    assert len(lines(store)) == 2


# ---- item 7: a corrupt resume checkpoint ---------------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_a_corrupt_resume_checkpoint_is_moved_aside_and_the_run_starts_fresh(damage, sample_data, tmp_path, capsys):
    from promptscale.resume import resume_checkpoint_path

    store = tmp_path / "results.jsonl"
    overrides = ["keep_checkpoint=true", "checkpoint_every_n_steps=1", "skip_finished=false"]
    first = run_with(sample_data, tmp_path, store, overrides)
    checkpoint = resume_checkpoint_path(tmp_path / "run", first["config_hash"])
    data = checkpoint.read_bytes()
    checkpoint.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"not a zip" * 9}[damage])
    again = run_with(sample_data, tmp_path, store, overrides)
    assert again["status"] == "finished" and again["train_steps"] == 2 and again["metrics"] == first["metrics"]
    aside = list(checkpoint.parent.glob(f"{checkpoint.name}.corrupt-*"))
    assert len(aside) == 1
    said = [x for x in capsys.readouterr().err.splitlines() if "unreadable" in x]
    assert len(said) == 1 and f"moved to {aside[0]}, starting fresh" in said[0]


# ---- item 8: a full disk ----------------------------------------------------------------------------


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), RuntimeError(
    "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")])  # fmt: skip
def test_disk_full_while_checkpointing_is_one_line_and_a_failed_record(error, sample_data, tmp_path, monkeypatch):
    from promptscale.results import StoreError, read_results

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "save", full)
    store = tmp_path / "results.jsonl"
    with pytest.raises(StoreError, match=r"^no space left on .*checkpoints$"):
        run_with(sample_data, tmp_path, store, ["checkpoint_every_n_steps=1"])
    [failed] = read_results(store)
    assert failed["status"] == "failed" and failed["error"].startswith("StoreError: no space left on")


# ---- item 13: NaN and infinity ----------------------------------------------------------------------


@pytest.mark.parametrize("override", ["method.lr=nan", "method.lr=inf", "method.lr=-inf", "method.init_range=nan"])
def test_non_finite_numbers_in_the_config_fail_before_loading(override, sample_data, tmp_path, no_model):
    from promptscale.errors import ConfigError

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"^{key}=.*: must be a finite number$"):
        run_with(sample_data, tmp_path, tmp_path / "results.jsonl", [override])
    assert not (tmp_path / "results.jsonl").exists()


def test_a_nan_metric_is_a_failed_line_never_a_nan_in_the_store(sample_data, tmp_path, monkeypatch):
    import promptscale.metrics
    from promptscale.results import NonFiniteResult, append_result

    monkeypatch.setattr(promptscale.metrics, "task_score", lambda metrics: float("nan"))
    store = tmp_path / "results.jsonl"
    with pytest.raises(NonFiniteResult, match="diverged: score=nan; recorded as failed"):
        run_with(sample_data, tmp_path, store)
    [line] = lines(store)
    record = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in a line"))
    assert record["status"] == "failed" and record["score"] is None
    with pytest.raises(ValueError):
        append_result(store, {"x": float("nan")})


# ---- items 17, 18: secrets ----------------------------------------------------------------------------


def test_config_key_secrets_are_scrubbed_from_every_hydra_file(tmp_path):
    from promptscale.results import secret_values
    from promptscale.train import _scrub_hydra_files

    api_key, password = "sk-PLANTEDfake0123456789", "hunter2"  # a short one too
    overrides = [f"+api_key={api_key}", f"+db.password={password}", "seed=1"]
    config = {"api_key": api_key, "db": {"password": password}, "seed": 1}
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (tmp_path / ".hydra" / "config.yaml").write_text(f"api_key: {api_key}\ndb:\n  password: {password}\nseed: 1\n")
    (tmp_path / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n" + "".join(f"    - {o}\n" for o in overrides)
        + f"  job:\n    override_dirname: {','.join(overrides)}\n"
    )  # fmt: skip
    (tmp_path / "multirun.yaml").write_text(f"api_key: {api_key}\n")
    _scrub_hydra_files(tmp_path, secret_values({}, config), overrides)
    for path in [*tmp_path.glob(".hydra/*.yaml"), tmp_path / "multirun.yaml"]:
        text = path.read_text()
        assert api_key not in text and password not in text, path.name
        assert "<redacted>" in text and ("seed" in text or path.name == "multirun.yaml")


def test_ordinary_paths_are_not_redacted(tmp_path):
    from promptscale.results import redact, secret_values

    env = {"PWD": str(tmp_path), "OLDPWD": "/home/someone/projects", "SSH_AUTH_SOCK": str(tmp_path),
           "DB_PWD": "hunter2hunter2", "HF_TOKEN": "hf_abcdefghijkl"}  # fmt: skip
    assert secret_values(env) == ["hf_abcdefghijkl", "hunter2hunter2"]
    record = {"output_dir": f"{tmp_path}/sweep/0", "cwd": str(tmp_path)}
    assert redact(record, secret_values(env)) == record


# ---- item 19: per-run wall time and peak memory -------------------------------------------------------


def test_wall_time_adds_up_over_resumes(sample_data, tmp_path):
    from promptscale.resume import SafeCheckpointIO, resume_checkpoint_path

    store = tmp_path / "results.jsonl"
    overrides = ["keep_checkpoint=true", "checkpoint_every_n_steps=1", "skip_finished=false"]
    first = run_with(sample_data, tmp_path, store, overrides)
    checkpoint = resume_checkpoint_path(tmp_path / "run", first["config_hash"])
    state = torch.load(checkpoint, weights_only=True)
    [resume_state] = [v for k, v in state["callbacks"].items() if k.startswith("Resume")]
    assert 0 < resume_state["wall_time_s"] <= first["wall_time_s"] + 1
    resume_state["wall_time_s"] = 1000.0  # as if the segments before a kill took 1000 s
    SafeCheckpointIO().save_checkpoint(state, checkpoint)
    resumed = run_with(sample_data, tmp_path, store, overrides)
    assert 1000 < resumed["wall_time_s"] < 1000 + 60


def test_peak_memory_is_this_runs_not_the_process_lifetime():
    """In a fresh process: a long test session's allocator state (arenas, mmap counts) decides
    whether a freed block goes back to the OS, which is not what this checks."""
    code = """
import torch
from promptscale.resume import peak_memory_bytes, reset_peak_memory
reset_peak_memory()
block = torch.ones(64 << 20, dtype=torch.uint8) + 1  # 64 MiB touched
high = peak_memory_bytes()
del block
reset_peak_memory()
assert peak_memory_bytes() < high - (32 << 20), (peak_memory_bytes(), high)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ---- item 20: Ctrl-C ------------------------------------------------------------------------------------


def test_sigint_says_what_is_kept_and_writes_no_line(sample_data, tmp_path):
    from promptscale.resume import resume_checkpoint_path
    from promptscale.train import Interrupted

    class CtrlC(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                raise KeyboardInterrupt

    store = tmp_path / "results.jsonl"
    overrides = ["checkpoint_every_n_steps=1", "trainer.max_steps=4"]
    with pytest.raises(
        Interrupted,
        match=r"stopped by SIGINT at step 2; resume checkpoint at step 1 kept: .*ckpt; the same command resumes",
    ):
        run_with(sample_data, tmp_path, store, overrides, [CtrlC()])
    assert not lines(store)
    import signal

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again
    resumed = run_with(sample_data, tmp_path, store, overrides)
    assert resumed["train_steps"] == 4
    assert not resume_checkpoint_path(tmp_path / "run", resumed["config_hash"]).exists()


def test_sigint_during_the_final_evaluation_is_an_interruption_too(sample_data, tmp_path, monkeypatch):
    from promptscale.methods.base import AdaptationModule
    from promptscale.train import Interrupted

    def ctrl_c(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(AdaptationModule, "validation_step", ctrl_c)
    store = tmp_path / "results.jsonl"
    with pytest.raises(Interrupted, match=r"stopped by SIGINT at step 2; no resume checkpoint; the same command"):
        run_with(sample_data, tmp_path, store)
    assert not lines(store)


# ---- items 20, 21 on the command line ---------------------------------------------------------------

SIGINT_DRIVER = """
import os, signal, sys
import lightning as L
from promptscale import train as T

class CtrlC(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 1:
            os.kill(os.getpid(), signal.SIGINT)

original = T.trainer_kwargs
T.trainer_kwargs = lambda cfg: {**original(cfg), "callbacks": [CtrlC()]}
sys.argv = ["promptscale-train", *sys.argv[1:]]
T.main()
"""


def test_cli_ctrl_c_exits_130_saying_what_is_kept(sample_data, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(SIGINT_DRIVER)
    proc = subprocess.run(
        [sys.executable, str(driver), f"data.dir={sample_data}", f"hydra.run.dir={tmp_path / 'run'}", *FAST,
         "trainer.max_steps=4"],
        cwd=tmp_path, env=os.environ.copy(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 130, proc.stderr[-2000:]
    said = [x for x in proc.stderr.splitlines() if x.startswith("promptscale:")]
    assert said == ["promptscale: interrupted: stopped by SIGINT at step 1; no resume checkpoint; the same command "
                    "starts over"]  # fmt: skip
    assert not lines(tmp_path / "run" / "results.jsonl")


def test_cli_bad_input_leaves_no_run_dir(sample_data, tmp_path):
    run_dir = tmp_path / "outputs" / "day" / "time"
    command = [
        TRAIN_CLI,
        f"data.dir={sample_data}",
        "data.train_size=100000",
        f"hydra.run.dir={run_dir}",
        "logger=none",
    ]
    proc = subprocess.run(command, cwd=tmp_path, env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("promptscale: error: data.train_size=100000")
    assert not (tmp_path / "outputs").exists()
    # a run dir holding an earlier run's files is left as it was
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "resume-x.ckpt").write_bytes(b"x")
    subprocess.run(command, cwd=tmp_path, env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert (run_dir / "checkpoints" / "resume-x.ckpt").exists()


def test_an_interrupted_atomic_write_leaves_the_old_file_whole(tmp_path):
    from promptscale.files import atomic_path

    path = tmp_path / "sub" / "weights.bin"
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old" and [p.name for p in path.parent.iterdir()] == ["weights.bin"]
