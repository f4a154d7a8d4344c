"""The machine a benchmark runs on: hardware, load, threads, timing and peak memory."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

# dense bf16 tensor-core peak FLOP/s by device name (most specific first; matched as substrings)
PEAK_BF16_FLOPS = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
]


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def busy_cores(seconds: float = 1.0) -> float:
    """Cores other processes keep busy now (system-wide CPU use over ``seconds``)."""
    import psutil

    return psutil.cpu_percent(interval=seconds) / 100 * (os.cpu_count() or 1)


def auto_threads() -> int:
    """torch's default intra-op threads, minus the cores other processes keep busy: OpenMP threads
    that wait on a descheduled sibling make a step many times slower on a shared machine."""
    return max(1, min(torch.get_num_threads(), cores() - round(busy_cores())))


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---- hardware --------------------------------------------------------------------------------
def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def peak_bf16_flops(device_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def hardware_line(device: torch.device, dtype: str) -> str:
    import peft
    import transformers

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}"
    cpu = f"CPU: {cores()} cores ({cpu_name()}), torch threads: {torch.get_num_threads()}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB)"
        return f"{gpu}; {cpu}; {versions}; dtype {dtype}"
    return f"{cpu}; {platform.system()} {platform.machine()}; {versions}; dtype {dtype}"


# ---- timing and memory -----------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def release_memory() -> None:
    gc.collect()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class PeakMemory:
    """Peak memory above the level at ``start()``: ``max_memory_allocated`` on a GPU; on CPU the
    kernel's resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs), or a
    sampling thread (psutil, every 2 ms) where that reset is not allowed."""

    def __init__(self, device: torch.device):
        self.device = device
        self._stop = threading.Event()
        self._thread = None
        self._sampled = 0

    def start(self) -> PeakMemory:
        release_memory()
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.base = _rss()
        self.hwm = False
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
            self.hwm = self._vm_hwm() is not None
        if not self.hwm:
            self._sampled = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    @staticmethod
    def _vm_hwm() -> int | None:
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, _rss())
            time.sleep(0.002)

    def stop(self) -> int:
        if self.device.type == "cuda":
            sync(self.device)
            return int(torch.cuda.max_memory_allocated(self.device) - self.base)
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            return max(0, self._sampled - self.base)
        return max(0, (self._vm_hwm() or 0) - self.base)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value)
    )


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def autocast(device: torch.device, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---- child processes -------------------------------------------------------------------------
def train_command() -> list[str]:
    """``promptscale-train`` of this Python's environment (the module where no script is installed)."""
    cli = Path(sys.executable).parent / "promptscale-train"
    return [str(cli)] if cli.exists() else [sys.executable, "-m", "promptscale.train"]


def run_child(argv: list[str], logs: Path, env: dict | None = None) -> dict:
    """Run ``argv`` to the end, its output into ``logs/stdout.txt`` and ``logs/stderr.txt`` (a full
    pipe would stall it): its exit code, CPU seconds (user + system, its own children included) and
    peak RSS in MiB from ``wait4``, and wall seconds."""
    logs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(logs / "stdout.txt", "w") as out, open(logs / "stderr.txt", "w") as err:
        child = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    return {
        "code": os.waitstatus_to_exitcode(status),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "wall_s": time.perf_counter() - start,
    }
