"""The local results store: one JSON line per finished run, appended atomically."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

# keys that say where or how a run is watched, not what it computes: left out of the hash
NOT_IDENTITY = {
    "logger": None,
    "results_file": None,
    "experiment": None,
    "skip_finished": None,
    "checkpoint_every_n_steps": None,
    "keep_checkpoint": None,
    "keep_lm_weights": None,
    "swept": None,  # the W&B config's copy of a sweep job's swept values
    "model": ("hub_id",),
    "data": ("dir", "cache_dir", "num_workers"),
    "trainer": ("enable_progress_bar", "enable_model_summary", "enable_checkpointing"),
}


# a config key or an environment variable whose name has one of these words holds a secret
SECRET_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "pwd", "credential", "credentials", "auth"}
REDACTED = "<redacted>"


def is_secret_name(name: str) -> bool:
    """``api_key``, ``HF_TOKEN``, ``WANDB_API_KEY``, ``db.password``: yes; ``tokenizer``, ``max_tokens``: no."""
    return any(word in SECRET_WORDS for word in re.split(r"[^a-z0-9]+", name.lower()))


def secret_values(environ=None, config: dict | None = None) -> list[str]:
    """Values (8+ characters) of the environment's secret-named variables and of the config's
    secret-named keys, longest first: cut out of whatever is written or logged."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if is_secret_name(k) and len(v.strip()) >= 8}

    def walk(node) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            if isinstance(v, str) and isinstance(k, str) and is_secret_name(k) and len(v.strip()) >= 8:
                values.add(v)
            walk(v)

    walk(config or {})
    return sorted(values, key=len, reverse=True)


def redact(obj, secrets: list[str] | None = None):
    """A copy of ``obj`` (dicts, lists, tuples, strings; anything else as it is) with the values of
    secret-named keys replaced by ``<redacted>`` and every occurrence of a secret value (default:
    those of :func:`secret_values`) cut out of its strings."""
    secrets = secret_values() if secrets is None else secrets

    def walk(value, secret_key: bool = False):
        if isinstance(value, dict):
            items = [(k, walk(v, isinstance(k, str) and is_secret_name(k))) for k, v in value.items()]
            try:
                return type(value)(items)
            except TypeError:  # a dict subclass with another constructor
                return dict(items)
        if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
            return type(value)(walk(v, secret_key) for v in value)
        if isinstance(value, str):
            if secret_key and value:
                return REDACTED
            for secret in secrets:
                value = value.replace(secret, REDACTED)
        return value

    return walk(obj)


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
