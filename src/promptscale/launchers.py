"""``hydra/launcher=submitit_local`` with a cap on concurrent jobs.

hydra-submitit-launcher's local launcher starts every job of a sweep at once (submitit's local
executor has no ``array_parallelism``): 20 model-loading processes on 2 cores. This one launches
the sweep in waves of ``array_parallelism`` jobs (default: usable cores // ``cpus_per_task``),
and gives each job ``cpus_per_task`` torch threads (OMP_NUM_THREADS, read by
``promptscale.train.job_threads``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class CappedLocalLauncher(LocalLauncher):
    def __init__(self, array_parallelism: int | None = None, **params) -> None:
        super().__init__(**params)
        self.threads = int(self.params.get("cpus_per_task") or 1)
        self.array_parallelism = array_parallelism or max(1, usable_cores() // self.threads)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        previous = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(self.threads)  # the jobs' processes inherit this environment
        try:
            returns = []
            for start in range(0, len(job_overrides), self.array_parallelism):
                wave = job_overrides[start : start + self.array_parallelism]
                returns += super().launch(wave, initial_job_idx + start)
            return returns
        finally:
            if previous is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = previous
