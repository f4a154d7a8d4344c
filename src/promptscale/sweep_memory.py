"""Memory of an in-process sweep: run N identical jobs in one ``--multirun`` (they differ only in
``checkpoint_every_n_steps``, 1000 and up, which a run of fewer steps never reaches; so every job
reads the same examples and has the same working set) and print, after each job, the process's resident memory (RSS) and that job's peak (VmHWM, reset
before each job through ``/proc/self/clear_refs``; Linux).

    python -m promptscale.sweep_memory --jobs 20 model=smollm2-135m trainer.max_steps=1 \\
        data.train_size=8 data.eval_size=8 logger=none data.dir=<data>

A flat curve means nothing keeps a finished job alive (its model, trainer, W&B run).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

from hydra.experimental.callback import Callback


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


class MemoryReport(Callback):
    """Prints one line per job: job number, RSS after it, its own peak RSS, its wall time."""

    def __init__(self) -> None:
        self.start = 0.0
        self.peak = 0

    def on_job_start(self, config, **kwargs) -> None:
        gc.collect()
        _reset_peak()
        self.start = time.time()

    def on_job_end(self, config, job_return, **kwargs) -> None:
        import lightning as L

        from promptscale.models import Backbone

        peak = _status("VmHWM")
        self.peak = max(self.peak, peak)  # clear_refs resets the process's own high-water mark too
        gc.collect()
        alive = sum(isinstance(o, (L.LightningModule, L.Trainer, Backbone)) for o in gc.get_objects())
        print(
            f"memory: job {config.hydra.job.num + 1} rss_after {_status('VmRSS') / 2**20:.0f} MiB "
            f"job_peak {peak / 2**20:.0f} MiB process_peak {self.peak / 2**20:.0f} "
            f"MiB alive_modules_trainers {alive} time {time.time() - self.start:.1f} s status {job_return.status.name}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--sweep-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("overrides", nargs="*", help="promptscale-train overrides (the same for every job)")
    args = parser.parse_args(argv)
    sweep_dir = args.sweep_dir or Path(tempfile.mkdtemp(prefix="sweep-memory-"))
    from promptscale import train

    sys.argv = [
        "promptscale-train",
        "--multirun",
        f"checkpoint_every_n_steps=range(1000,{1000 + args.jobs})",
        "skip_finished=false",
        *args.overrides,
        f"hydra.sweep.dir={sweep_dir}",
        f"+hydra.callbacks.memory_report._target_={__name__}.MemoryReport",
    ]
    train.main()


if __name__ == "__main__":
    main()
