"""Throughput and memory of a sweep: N identical jobs (they differ only in
``checkpoint_every_n_steps``, 1000 and up, which a run of fewer steps never reaches; so every job
reads the same examples and has the same working set), run in one process (``--multirun``, the
default) or as N separate ``promptscale-train`` processes (``--separate``). One line per job: its
wall time and its peak resident memory; in one process also the RSS after it (VmHWM is reset
before each job through ``/proc/self/clear_refs``; Linux), for separate processes the child's own
peak (``wait4``'s ``ru_maxrss``). ``--json FILE`` appends the jobs as JSON lines (``make bench``).

    python -m benchmarks.sweep_memory --jobs 20 [--separate] model=smollm2-135m trainer.max_steps=1 \\
        data.train_size=8 data.eval_size=8 logger=none data.dir=<data>

In one process a flat RSS curve means nothing keeps a finished job alive (its model, trainer,
W&B run); runs per hour against ``--separate`` is what the shared imports and cached backbone buy.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from benchmarks.machine import run_child, train_command


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _report(job: dict, out: str | None) -> None:
    rss = f" rss_after {job['rss_after_mib']:.0f} MiB" if job.get("rss_after_mib") is not None else ""
    print(
        f"memory: job {job['job']}{rss} job_peak {job['peak_mib']:.0f} MiB time {job['wall_s']:.1f} s "
        f"status {job['status']}",
        flush=True,
    )
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(job) + "\n")


class MemoryReport(Callback):
    """In one process: after each job, its number, the RSS after it, its own peak RSS, its wall
    time and how many modules/trainers/backbones are still alive."""

    def __init__(self, out: str | None = None) -> None:
        self.out = out
        self.start = 0.0

    def on_job_start(self, config, **kwargs) -> None:
        gc.collect()
        _reset_peak()
        self.start = time.time()

    def on_job_end(self, config, job_return, **kwargs) -> None:
        import lightning as L

        from promptscale.models import Backbone

        peak = _status("VmHWM")
        wall = time.time() - self.start
        gc.collect()
        alive = sum(isinstance(o, (L.LightningModule, L.Trainer, Backbone)) for o in gc.get_objects())
        job = {
            "mode": "in-process",
            "job": config.hydra.job.num + 1,
            "wall_s": wall,
            "peak_mib": peak / 2**20,
            "rss_after_mib": _status("VmRSS") / 2**20,
            "alive_modules_trainers": alive,
            "status": job_return.status.name,
        }
        _report(job, self.out)


def _separate(args, sweep_dir: Path) -> None:
    """Each job its own ``promptscale-train`` process, one after the other."""
    for i in range(args.jobs):
        argv = [
            *train_command(), f"checkpoint_every_n_steps={1000 + i}", "skip_finished=false", *args.overrides,
            f"hydra.run.dir={sweep_dir / str(i)}", f"results_file={sweep_dir / 'results.jsonl'}",
        ]  # fmt: skip
        logs = sweep_dir / f"logs-{i}"
        ran = run_child(argv, logs)
        error = (logs / "stderr.txt").read_text(errors="replace")
        job = {
            "mode": "separate",
            "job": i + 1,
            "wall_s": ran["wall_s"],
            "peak_mib": ran["peak_mib"],
            "status": "COMPLETED" if ran["code"] == 0 else f"FAILED ({ran['code']}): {error[-500:]}",
        }
        _report(job, args.json)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--separate", action="store_true", help="one promptscale-train process per job")
    parser.add_argument("--json", default=None, help="append each job as a JSON line to this file")
    parser.add_argument("--sweep-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("overrides", nargs="*", help="promptscale-train overrides (the same for every job)")
    args = parser.parse_args(argv)
    sweep_dir = args.sweep_dir or Path(tempfile.mkdtemp(prefix="sweep-memory-"))
    if args.separate:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        _separate(args, sweep_dir)
        return
    from promptscale import train

    sys.argv = [
        "promptscale-train",
        "--multirun",
        f"checkpoint_every_n_steps=range(1000,{1000 + args.jobs})",
        "skip_finished=false",
        *args.overrides,
        f"hydra.sweep.dir={sweep_dir}",
        f"+hydra.callbacks.memory_report._target_={__name__}.MemoryReport",
        *([f"+hydra.callbacks.memory_report.out={args.json}"] if args.json else []),
    ]
    train.main()


if __name__ == "__main__":
    main()
