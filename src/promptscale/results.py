"""The local results store: one JSON line per finished run, appended atomically."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
from pathlib import Path

# keys that say where or how a run is watched, not what it computes: left out of the hash
NOT_IDENTITY = {
    "logger": None,
    "results_file": None,
    "experiment": None,
    "skip_finished": None,
    "data": ("dir", "cache_dir", "num_workers"),
    "trainer": ("enable_progress_bar", "enable_model_summary", "enable_checkpointing"),
}


def config_hash(config: dict) -> str:
    """Stable 12-hex hash of the resolved config, without the keys in NOT_IDENTITY."""
    identity = {}
    for key, value in config.items():
        if key in NOT_IDENTITY and NOT_IDENTITY[key] is None:
            continue
        if key in NOT_IDENTITY:
            value = {k: v for k, v in value.items() if k not in NOT_IDENTITY[key]}
        identity[key] = value
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def append_result(path: Path, record: dict) -> None:
    """Append one line with a single write under an exclusive lock, then fsync: concurrent
    writers never interleave and a crash never leaves half a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(path: Path) -> list[dict]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def finished_record(path: Path, key: str) -> dict | None:
    """The finished line of config hash ``key`` in the store, if any."""
    if not Path(path).is_file():
        return None
    return next((r for r in read_results(path) if r.get("config_hash") == key and r.get("status") == "finished"), None)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
