"""Resumable runs: a resume checkpoint every N steps and on SIGTERM, restored exactly.

A resumed run ends with the metrics and trainable weights of an uninterrupted one (bit for bit on
CPU): Lightning restores the weights it saved (trainable ones only for frozen-backbone methods),
the optimizer, the scheduler and the loop counters; :class:`Resume` adds what it does not keep:
where the data order stood (epoch, samples of it seen; see ``SeededSampler``) and the RNG states
(dropout), put back just before the first batch after the restart.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import sys
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from promptscale.errors import ConfigError
from promptscale.files import atomic_path
from promptscale.results import is_no_space, no_space, redact


def resume_checkpoint_path(out_dir: Path, key: str) -> Path:
    """The run dir's resume checkpoint for config hash ``key``: another config never resumes from it."""
    return Path(out_dir) / "checkpoints" / f"resume-{key}.ckpt"


def usable_checkpoint(path: Path) -> Path | None:
    """``path`` if it holds a readable checkpoint; a truncated, empty or garbled one is moved aside
    to ``<name>.corrupt-<time>`` with one line (the run starts fresh) instead of failing every
    rerun. Read with ``mmap``: the zip index and the pickle are checked, the tensors not copied."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(state, dict) or "state_dict" not in state or "loops" not in state:
            raise ValueError("not a Lightning checkpoint")
        return path
    except Exception as err:  # noqa: BLE001 - whatever is wrong with it, it cannot be resumed from
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        print(f"promptscale: resume checkpoint {path} is unreadable ({reason}); moved to {aside}, starting fresh",
              file=sys.stderr, flush=True)  # fmt: skip
        return None


def reset_peak_memory() -> None:
    """Start this run's peak memory anew: CUDA's allocator statistics, and on Linux the process's
    RSS high-water mark (``/proc/self/clear_refs``), so that a sweep's later jobs do not report
    an earlier job's peak."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux: peak_memory_bytes falls back to the process's lifetime peak


def peak_memory_bytes() -> int:
    """Peak since :func:`reset_peak_memory`: CUDA ``max_memory_allocated``, else the RSS high-water
    mark (``VmHWM``; elsewhere than Linux, ``ru_maxrss``: the process's lifetime peak)."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return int(torch.cuda.max_memory_allocated())
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


class SafeCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all (temp file, fsync, rename: a kill mid-write leaves
    the previous one), and read with ``torch.load(weights_only=True)`` (tensors and plain values
    only: a checkpoint cannot run code)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        try:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
        except (OSError, RuntimeError) as err:
            if is_no_space(err):
                raise no_space(path.parent) from err
            raise

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def rng_states() -> dict:
    """torch (CPU and CUDA), Python and NumPy RNG states, as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _world() -> int:
    """The number of processes training together (1 without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


class Interruption(L.Callback):
    """Notes Ctrl-C, which Lightning turns into ``sys.exit(1)``, so that the run can say what happened
    (and exit 130). No checkpoint is saved: Ctrl-C lands anywhere, mid optimizer step too (SIGTERM
    waits for the batch to end)."""

    seen = False

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.seen = self.seen or isinstance(exception, KeyboardInterrupt)


class Resume(L.Callback):
    """Saves ``path`` every ``every_n_steps`` optimizer steps (0: never), when Lightning stops the
    run on SIGTERM, and before handing a submitit preemption signal (USR2) on to submitit; keeps
    in it the data position and RNG states; and cuts secret values out of what it saves."""

    def __init__(self, path: Path, every_n_steps: int, datamodule, secrets: list[str], started: float | None = None):
        self.path, self.every_n_steps, self.datamodule, self.secrets = Path(path), every_n_steps, datamodule, secrets
        self.epoch = self.seen = 0
        self.saved_step = -1
        self._step = 0
        self.preempted = False
        # this run's wall time and peak memory before this process (segments up to the checkpoint)
        self.started, self.wall_before, self.peak_before = started or time.time(), 0.0, 0
        self._pending_rng: dict | None = None
        self._deferred: tuple | None = None  # (previous handler, signum) of a signal held back
        self._sigterm = False  # SIGTERM received during training (see on_train_start)
        self._device = torch.device("cpu")
        self._previous: dict = {}

    # ---- the checkpoint --------------------------------------------------------------------
    def save(self, trainer) -> None:
        self._step = trainer.global_step
        if trainer.global_step != self.saved_step:
            trainer.save_checkpoint(self.path, weights_only=False)
            self.saved_step = trainer.global_step

    def wall_time_s(self) -> float:
        """This run's wall time: earlier segments (up to their last checkpoint) and this one."""
        return self.wall_before + time.time() - self.started

    def peak_memory_bytes(self) -> int:
        return max(self.peak_before, peak_memory_bytes())

    def state_dict(self) -> dict:
        # every process's RNG states (DDP: Lightning writes rank 0's checkpoint, but calls this on every rank)
        states = [rng_states()]
        if _world() > 1:
            states = [None] * _world()
            torch.distributed.all_gather_object(states, rng_states())
        return {
            "epoch": self.epoch,
            "seen": self.seen,
            "rng": states[0],
            "rng_by_rank": states,
            "global_step": self._step,
            "wall_time_s": self.wall_time_s(),
            "peak_memory_bytes": self.peak_memory_bytes(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.wall_before, self.peak_before = state.get("wall_time_s", 0.0), state.get("peak_memory_bytes", 0)
        self.epoch, self.seen = state["epoch"], state["seen"]
        self.datamodule.resume_at = (self.epoch, self.seen)
        by_rank = state.get("rng_by_rank") or [state["rng"]]
        rank = torch.distributed.get_rank() if _world() > 1 else 0
        if len(by_rank) != _world():
            raise ConfigError(
                f"{self.path}: saved by {len(by_rank)} processes, resumed by {_world()}: "
                "resume with the same trainer.devices and trainer.num_nodes, or delete it to start over"
            )
        self._pending_rng = by_rank[rank]
        self.saved_step = state["global_step"]

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if self.secrets:
            checkpoint.update(redact(dict(checkpoint), self.secrets))

    # ---- the data position and the RNG -----------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        # now, not on load: building the module and the loaders after the restore must not shift them
        if self._pending_rng is not None:
            set_rng_states(self._pending_rng)
            self._pending_rng = None
        # With several processes, Lightning's SIGTERM handler runs a collective (a broadcast from
        # rank 0) inside the signal handler, whichever collective the process is in at that moment:
        # rank 0 broadcast while rank 1 waited in the checkpoint barrier, and both hung. Ours only
        # notes the signal; all ranks agree on it at the end of each batch (on_train_batch_end).
        # Lightning installs its handler after on_fit_start, so it is replaced here; its teardown
        # puts back the one from before fit. One process keeps Lightning's (no collective there).
        if _world() > 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._note_sigterm)

    def _note_sigterm(self, signum, frame) -> None:
        self._sigterm = True

    def _stop_agreed(self) -> bool:
        """Whether any process got SIGTERM; every process calls this at the same point of every batch."""
        if _world() == 1:
            return False  # Lightning's own handler stops the run
        flag = torch.tensor([int(self._sigterm)], device=self._device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._step = trainer.global_step
        self.epoch = trainer.current_epoch
        self.seen = (batch_idx + 1) * self.datamodule.data.batch_size
        self._device = trainer.strategy.root_device
        stop = self._stop_agreed()
        if stop or (self.every_n_steps and trainer.global_step % self.every_n_steps == 0):
            self.save(trainer)
        if stop:
            self.preempted = True
            raise SIGTERMException()
        if self._deferred is not None:
            previous, signum = self._deferred
            self._deferred = None
            self.save(trainer)
            self.preempted = True
            signal.signal(signum, previous)
            previous(signum, None)  # submitit: checkpoint() (same job, same run dir), requeue, exit

    def on_exception(self, trainer, pl_module, exception) -> None:
        # with several processes the agreed stop saved already (a save is collective: never from one rank)
        if isinstance(exception, SIGTERMException) and _world() == 1:
            self.save(trainer)
            self.preempted = True

    # ---- submitit's preemption signal --------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        self._step = trainer.global_step
        name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
        signum = getattr(signal, name, None)
        if signum is None or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signum)
        if callable(previous):  # only when someone (submitit) handles it: by default USR2 kills
            self._previous[signum] = previous

            def defer(sig, frame):  # act at the end of this batch, after saving, not mid-step
                self._deferred = (previous, sig)

            signal.signal(signum, defer)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
        self._previous = {}
