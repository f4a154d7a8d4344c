"""Real clusters: a single-node SLURM brought up by the test, and a local Ray instance.

Each runs a 4-job sweep (``seed=0,1,2,3``, tiny-gpt2) through ``promptscale-train --multirun``
with the shipped launcher config (``hydra/launcher=slurm`` / ``ray_cluster``, CPU defaults), and
preempts a job mid-training; the preempted job must resume and end bit-identical (trainable
weights and metrics) to an uninterrupted run of the same config.

SLURM: Debian's ``slurm-wlm`` and ``munge`` (installed with apt-get when missing and the test runs
as root), one node with this machine's CPUs, ``proctrack/linuxproc``, ``task/none``,
``select/cons_tres``, no accounting (submitit then reads a job's end from its result file). munged,
slurmctld and slurmd run from a generated config in a temp dir and are stopped by PID.
Ray: needs the ``cluster`` extra (hydra-ray-launcher), which ``make test-cluster`` installs into its
own venv. Opt in with PROMPTSCALE_CLUSTER_TESTS=1 (``make test-cluster``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        os.environ.get("PROMPTSCALE_CLUSTER_TESTS") != "1",
        reason="brings up SLURM / Ray (minutes, root for apt-get): opt in with PROMPTSCALE_CLUSTER_TESTS=1 "
        "(make test-cluster)",
    ),
]

TRAIN_CLI = str(Path(sys.executable).parent / "promptscale-train")
# 150 steps of a 4-token prompt on 8 examples: long enough to be preempted mid-way, seconds in all
JOB = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "task=rte",
    "model=tiny-gpt2",
    "method=prompt_tuning",
    "method.prompt_length=4",
    "data.train_size=8",
    "data.eval_size=8",
    "data.batch_size=2",
    "trainer.max_steps=150",
    "checkpoint_every_n_steps=1",
    "keep_checkpoint=true",
]
SEEDS = [0, 1, 2, 3]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(
                f"{proc.args[:3]} ended while waiting for {what}: {(out or '')[-2000:]}\n{(err or '')[-3000:]}"
            )
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def records(sweep: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep / "results.jsonl").read_text().splitlines()]


def final_checkpoint(run_dir: Path) -> dict:
    [path] = (run_dir / "checkpoints").glob("resume-*.ckpt")
    return torch.load(path, weights_only=True)


def checkpoint_step(run_dir: Path) -> int:
    paths = list((run_dir / "checkpoints").glob("resume-*.ckpt"))
    if not paths:
        return 0
    try:
        return torch.load(paths[0], weights_only=True)["global_step"]
    except Exception:  # noqa: BLE001 - being replaced right now
        return 0


def reference(tmp_path: Path, data_dir: Path, seed: int) -> tuple[dict, dict]:
    """The same config as job ``seed`` of the sweep, run uninterrupted in one process."""
    run_dir = tmp_path / f"reference-{seed}"
    proc = subprocess.run(
        [TRAIN_CLI, *JOB, f"seed={seed}", f"data.dir={data_dir}", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    [record] = records(run_dir)
    return record, final_checkpoint(run_dir)


def assert_sweep_resumed_exactly(sweep: Path, preempted: dict[int, str], tmp_path: Path, data_dir: Path):
    """4 finished lines, one per seed; each preempted job equals its uninterrupted reference."""
    lines = records(sweep)
    assert sorted(r["seed"] for r in lines) == SEEDS
    assert all(r["status"] == "finished" and r["train_steps"] == 150 for r in lines)
    by_seed = {r["seed"]: r for r in lines}
    for seed in preempted:
        expected, expected_ckpt = reference(tmp_path, data_dir, seed)
        got, got_ckpt = by_seed[seed], final_checkpoint(sweep / str(seed))
        assert got["config_hash"] == expected["config_hash"]
        assert got["metrics"] == expected["metrics"], seed
        assert got_ckpt["global_step"] == expected_ckpt["global_step"] == 150
        assert torch.equal(got_ckpt["state_dict"]["prompt"], expected_ckpt["state_dict"]["prompt"]), seed


# ---- SLURM ---------------------------------------------------------------------------------------


def _have_slurm() -> bool:
    return all(shutil.which(tool) for tool in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue"))


def _install_slurm() -> str | None:
    """Install Debian's slurm-wlm and munge when missing; None when done, else why not."""
    if _have_slurm():
        return None
    if not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get (Debian/Ubuntu) to install slurm-wlm and munge"
    if os.geteuid() != 0:
        return "SLURM is not installed; installing slurm-wlm and munge needs root (apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "slurm-wlm", "munge"]):
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            return f"could not install slurm-wlm and munge ({' '.join(command)}): {proc.stderr.strip()[-300:]}"
    return None if _have_slurm() else "slurm-wlm installed but its tools are not on PATH"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLURM_CONF = """\
ClusterName=promptscale
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=30
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture
def slurm(tmp_path_factory):
    """A single-node SLURM cluster (munged, slurmctld, slurmd); yields the environment to reach it."""
    why_not = _install_slurm()
    if why_not:
        pytest.skip(why_not)
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname()
    conf = root / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(host=host, root=root, cpus=os.cpu_count(), ctld_port=_free_port(), d_port=_free_port())
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons: list[subprocess.Popen] = []

    def start(command, log):
        proc = subprocess.Popen(command, env=env, stdout=open(root / log, "w"), stderr=subprocess.STDOUT)
        daemons.append(proc)
        return proc

    try:
        start(
            ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={root}/munge.socket",
             f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munge.seed"],
            "munged.out",
        )  # fmt: skip
        wait_for(lambda: (root / "munge.socket").exists(), 30, "munged's socket")
        start(["slurmctld", "-D", "-i", "-f", str(conf)], "slurmctld.out")
        start(["slurmd", "-D", "-f", str(conf)], "slurmd.out")

        def node_idle():
            proc = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            return proc.returncode == 0 and proc.stdout.strip() == "idle"

        try:
            wait_for(node_idle, 60, "the node to be idle")
        except AssertionError:
            logs = "\n".join(
                (root / n).read_text()[-1500:] for n in ("slurmctld.log", "slurmd.log") if (root / n).exists()
            )
            raise AssertionError(f"SLURM did not come up:\n{logs}") from None
        yield env
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
        for proc in reversed(daemons):  # stopped by PID: the ones this fixture started
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _array_job_id(env) -> str:
    proc = subprocess.run(["squeue", "-h", "-o", "%F"], env=env, capture_output=True, text=True)
    ids = set(proc.stdout.split())
    return ids.pop() if len(ids) == 1 else ""


def test_slurm_sweep_with_preempted_jobs_resumes_bit_identically(slurm, sample_data, tmp_path):
    sweep = tmp_path / "sweep"
    env = {**slurm, "OMP_NUM_THREADS": "4"}  # the job must take its threads from SLURM (1 CPU), not this
    proc = subprocess.Popen(
        [TRAIN_CLI, "--multirun", "hydra/launcher=slurm", f"seed={','.join(map(str, SEEDS))}", *JOB,
         f"data.dir={sample_data}", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        array = wait_for(lambda: _array_job_id(slurm), 120, "the array job", proc)
        # job 1: scontrol requeue (SLURM sends SIGTERM, the run saves and exits, SLURM starts it again)
        wait_for(lambda: checkpoint_step(sweep / "1") >= 5, 300, "job 1 to train", proc)
        subprocess.run(["scontrol", "requeue", f"{array}_1"], env=slurm, check=True)
        # job 2: submitit's preemption signal (USR2): saved, then submitit requeues it itself
        wait_for(lambda: checkpoint_step(sweep / "2") >= 5, 300, "job 2 to train", proc)
        subprocess.run(["scancel", "--signal=USR2", f"{array}_2"], env=slurm, check=True)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    logs = {int(p.parent.name.split("_")[-1]): p.read_text() for p in (sweep / ".submitit").glob("*/*_log.out")}
    errs = {int(p.parent.name.split("_")[-1]): p.read_text() for p in (sweep / ".submitit").glob("*/*_log.err")}
    for job in (1, 2):  # really interrupted mid-training, then resumed
        assert "promptscale: resuming from" in logs[job], errs[job][-2000:]
    assert "promptscale: preempted: stopped by SIGTERM" in errs[1]
    for job, text in logs.items():  # the right position, threads from the job's CPUs
        assert f"promptscale: sweep run {job + 1} of 4:" in text
    assert_sweep_resumed_exactly(sweep, {1: "requeue", 2: "USR2"}, tmp_path, sample_data)


# ---- Ray ------------------------------------------------------------------------------------------


def test_ray_sweep_with_preempted_job_resumes_bit_identically(sample_data, tmp_path):
    """The same sweep on a local Ray instance (ray_cluster's CPU defaults: 1 CPU per job); job 1's
    worker gets SIGTERM mid-training (a node being drained). Ray retries the task (a lost worker's
    task is retried), or the same command run again does: either way job 1 resumes from its checkpoint."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs the `cluster` extra (make test-cluster)")
    sweep = tmp_path / "sweep"
    command = [TRAIN_CLI, "--multirun", "hydra/launcher=ray_cluster", "hydra.launcher.ray.init.num_cpus=2",
               f"seed={','.join(map(str, SEEDS))}", *JOB, f"data.dir={sample_data}", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.Popen(command, cwd=tmp_path, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        wait_for(lambda: checkpoint_step(sweep / "1") >= 5, 300, "job 1 to train", proc)
        worker = wait_for(lambda: _process_with_open_file_under(sweep / "1"), 30, "job 1's Ray worker", proc)
        os.kill(worker, signal.SIGTERM)
        output, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    # (Ray's own SIGTERM handler ends the worker at once: the last periodic checkpoint is the one resumed)
    if sorted(r["seed"] for r in records(sweep)) != SEEDS:  # Ray did not retry it: run the sweep again
        again = subprocess.run(
            command, cwd=tmp_path, env=os.environ.copy(), capture_output=True, text=True, timeout=900
        )
        output += again.stdout + again.stderr
    assert "promptscale: resuming from" in output, output[-3000:]
    assert "sweep run 2 of 4:" in output and "sweep run 1 of 1" not in output
    assert_sweep_resumed_exactly(sweep, {1: "SIGTERM"}, tmp_path, sample_data)


def _process_with_open_file_under(run_dir: Path) -> int | None:
    """The process (a Ray worker) holding a file of ``run_dir`` open: Hydra's job log stays open."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if int(pid) != os.getpid() and any(fd.startswith(f"{run_dir}/") for fd in fds):
            return int(pid)
    return None


def test_ray_sweep_attaches_to_a_running_head(sample_data, tmp_path):
    """``hydra.launcher.ray.init.address=<head>``: ray_cluster sends no object_store_memory (which
    ray.init refuses when attaching), and the jobs run on the head's workers."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs the `cluster` extra (make test-cluster)")
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    # the head's session dir, where a driver on the same node finds it; short (sockets: at most 107 bytes)
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray"))
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"],
        env=env, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    sweep = tmp_path / "sweep"
    try:
        wait_for(lambda: "Ray runtime started" in (tmp_path / "head.log").read_text(), 120, "the Ray head", head)
        proc = subprocess.run(
            [TRAIN_CLI, "--multirun", "hydra/launcher=ray_cluster", "hydra.launcher.ray.init.address=auto",
             "seed=0,1", *JOB, "trainer.max_steps=2", f"data.dir={sample_data}", f"hydra.sweep.dir={sweep}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        head.send_signal(signal.SIGTERM)  # stopped by PID: `ray start --block` stops the head's processes
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Connecting to existing Ray cluster" in proc.stdout + proc.stderr
    assert sorted((r["seed"], r["status"]) for r in records(sweep)) == [(0, "finished"), (1, "finished")]
