"""Multi-process training (DDP) done right, on CPU with gloo: ``trainer.accelerator=cpu
trainer.devices=2 trainer.strategy=ddp`` through the real CLI (Lightning starts the second process).

One results line per run (rank 0 writes it, also a failed one), metrics over exactly the eval set
(no padded duplicates), a mid-epoch SIGTERM that stops both processes (no deadlock) and a resume
that ends bit-identical to an uninterrupted run. Each test starts 2-process runs (~30-60 s each on
a busy 2-core machine), so they carry the ``cluster`` marker: run them with ``make test-cluster``
(or PROMPTSCALE_CLUSTER_TESTS=1 pytest -m cluster tests/test_ddp.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        os.environ.get("PROMPTSCALE_CLUSTER_TESTS") != "1",
        reason="starts 2-process DDP runs (minutes): opt in with PROMPTSCALE_CLUSTER_TESTS=1 (make test-cluster)",
    ),
]

DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
BASE = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "task=rte",
    "model=tiny-gpt2",
    "data.eval_size=7",  # odd: a padded 2-way split would count one example twice
]
# tiny-gpt2 has dropout, so each process's RNG matters; 8 examples in batches of 2 over 2 processes:
# 2 steps an epoch, 5 steps; step 3 is the middle of the second epoch
TRAIN = [
    *BASE,
    "method=prompt_tuning",
    "method.prompt_length=4",
    "data.train_size=8",
    "data.batch_size=2",
    "trainer.max_steps=5",
    "checkpoint_every_n_steps=1",
    "keep_checkpoint=true",
]

# The CLI, plus a callback that (env PS_TEST_SIGTERM_AT) sends SIGTERM to rank 0 alone after that
# step, or (env PS_TEST_FAIL_AT) fails every process there. Lightning starts rank 1 by running this
# same script with the same arguments.
DRIVER = textwrap.dedent(
    """
    import os, signal
    import lightning as L
    from promptscale import train as T

    sigterm_at = int(os.environ.get("PS_TEST_SIGTERM_AT", "-1"))
    fail_at = int(os.environ.get("PS_TEST_FAIL_AT", "-1"))

    class Driver(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == sigterm_at and trainer.global_rank == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            if trainer.global_step == fail_at:
                raise RuntimeError(f"planted failure on rank {trainer.global_rank}")

    original = T.trainer_kwargs
    T.trainer_kwargs = lambda cfg: {**original(cfg), "callbacks": [Driver()]}
    T.main()
    """
)


def cli(tmp_path: Path, run_dir: Path, overrides, data_dir: Path, **env) -> subprocess.CompletedProcess:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return subprocess.run(
        [sys.executable, str(driver), *overrides, f"data.dir={data_dir}", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def lines(run_dir: Path) -> list[dict]:
    path = run_dir / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_one_results_line_and_metrics_over_exactly_the_eval_set(sample_data, tmp_path):
    """ICL (no training): 2 processes score the 7 eval examples as 1 does, and write one line."""
    single = cli(tmp_path, tmp_path / "one", [*BASE, "method=icl"], sample_data)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = cli(tmp_path, tmp_path / "two", [*BASE, "method=icl", *DDP], sample_data)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in ddp.stdout + ddp.stderr  # really two processes
    [one] = lines(tmp_path / "one")
    [two] = lines(tmp_path / "two")  # rank 0 alone writes
    assert two["status"] == "finished"
    assert two["metrics"] == one["metrics"] and two["score"] == one["score"]
    # the accuracy is k/7: a padded split would give k/8
    assert round(two["metrics"]["accuracy"] * 7, 6).is_integer()


def test_failed_run_writes_one_failed_line(sample_data, tmp_path):
    proc = cli(tmp_path, tmp_path / "run", [*TRAIN, *DDP], sample_data, PS_TEST_FAIL_AT="2")
    assert proc.returncode != 0
    [line] = lines(tmp_path / "run")
    assert line["status"] == "failed" and "planted failure on rank 0" in line["error"]


def test_sigterm_mid_epoch_stops_both_processes_and_resume_is_exact(sample_data, tmp_path):
    clean = cli(tmp_path, tmp_path / "clean", [*TRAIN, *DDP], sample_data)
    assert clean.returncode == 0, clean.stderr[-3000:]
    [expected] = lines(tmp_path / "clean")
    assert expected["status"] == "finished" and expected["train_steps"] == 5

    # SIGTERM to rank 0 after step 3 while rank 1 goes on into the step's checkpoint barrier: both stop
    run_dir = tmp_path / "run"
    stopped = cli(tmp_path, run_dir, [*TRAIN, *DDP], sample_data, PS_TEST_SIGTERM_AT="3")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "promptscale: preempted: stopped by SIGTERM at step 3" in stopped.stderr
    assert lines(run_dir) == []  # preempted is not failed: no line
    [ckpt] = (run_dir / "checkpoints").glob("resume-*.ckpt")
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == 3  # mid-epoch (2 steps an epoch)
    [resume_state] = [v for k, v in state["callbacks"].items() if k.startswith("Resume")]
    assert (resume_state["epoch"], resume_state["seen"]) == (1, 2)
    assert len(resume_state["rng_by_rank"]) == 2  # each process's dropout RNG

    resumed = cli(tmp_path, run_dir, [*TRAIN, *DDP], sample_data)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"promptscale: resuming from {ckpt}" in resumed.stdout
    [record] = lines(run_dir)
    assert record["status"] == "finished" and record["train_steps"] == 5
    assert record["metrics"] == expected["metrics"] and record["config_hash"] == expected["config_hash"]
    [clean_ckpt] = (tmp_path / "clean" / "checkpoints").glob("resume-*.ckpt")
    final, reference = torch.load(ckpt, weights_only=True), torch.load(clean_ckpt, weights_only=True)
    assert final["global_step"] == reference["global_step"] == 5
    assert set(final["state_dict"]) == {"prompt"}
    assert torch.equal(final["state_dict"]["prompt"], reference["state_dict"]["prompt"])  # bit for bit
