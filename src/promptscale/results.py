"""The local results store: one JSON line per run, appended under a lock; a torn tail is repaired.

README "Results store" and "Guarantees" say what holds. The line format is self-delimiting: a
record is one JSON object ending in a newline, so a prefix of one (a writer killed mid-write, at
any record size) never parses as a record. Readers skip such lines with one warning naming
``file:line``; the next writer cuts a torn tail off, under the lock, before it appends.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from promptscale.errors import ConfigError, PromptscaleError


class StoreError(PromptscaleError):
    """The results store or the run dir cannot be written: not writable, not a file, or no space left."""


class NonFiniteResult(PromptscaleError):
    """A run ended with a NaN or infinite metric (it diverged): recorded as failed, never as a score."""


def no_space(path) -> StoreError:
    return StoreError(f"no space left on {path}")


def is_no_space(err: BaseException) -> bool:
    """ENOSPC, also as torch's zip writer reports it (a short write: "unexpected pos")."""
    return (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(err, RuntimeError) and "unexpected pos" in str(err)
    )


def _warn(message: str) -> None:
    print(f"promptscale: warning: {message}", file=sys.stderr)


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

# settings added after results were stored, each with the value that computes what runs did before
# the setting existed: a config holding that value hashes as it did without the key, so adding a
# setting never turns a finished run into an unfinished one (a sweep re-run still skips it)
ADDED_SETTINGS = {
    ("method", "prefix_dropout"): 0.0,
    ("method", "init_file"): "",
    ("method", "init_fallback"): "vocab",
}


# a config key or an environment variable whose name has one of these words holds a secret
SECRET_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "pwd", "credential", "credentials", "auth"}
# the shell's working directories: "pwd" here is the command, not a password
NOT_SECRET_ENV = {"PWD", "OLDPWD"}
REDACTED = "<redacted>"


def is_secret_name(name: str) -> bool:
    """``api_key``, ``HF_TOKEN``, ``WANDB_API_KEY``, ``db.password``: yes; ``tokenizer``, ``max_tokens``: no."""
    return any(word in SECRET_WORDS for word in re.split(r"[^a-z0-9]+", name.lower()))


def secret_values(environ=None, config: dict | None = None) -> list[str]:
    """Values (8+ characters) of the environment's secret-named variables and of the config's
    secret-named keys, longest first: cut out of whatever is written or logged."""
    environ = os.environ if environ is None else environ
    values = {
        v
        for k, v in environ.items()
        if is_secret_name(k) and k not in NOT_SECRET_ENV and len(v.strip()) >= 8 and not _is_existing_path(v)
    }

    def walk(node) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            if isinstance(v, str) and isinstance(k, str) and is_secret_name(k) and len(v.strip()) >= 8:
                values.add(v)
            walk(v)

    walk(config or {})
    return sorted(values, key=len, reverse=True)


def _is_existing_path(value: str) -> bool:
    """``SSH_AUTH_SOCK=/run/…/agent``, ``GOOGLE_APPLICATION_CREDENTIALS=/…/key.json``: where a
    secret lives, not the secret; cutting it out would mangle ordinary paths."""
    try:
        return os.path.isabs(value) and os.path.exists(value)
    except (OSError, ValueError):
        return False


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


def non_finite_keys(config: dict, prefix: str = "") -> list[str]:
    """``key=value`` of every NaN or infinite number in ``config`` (dotted keys)."""
    found = []
    for key, value in config.items() if isinstance(config, dict) else enumerate(config):
        name = f"{prefix}{key}"
        if isinstance(value, float) and not math.isfinite(value):
            found.append(f"{name}={value}")
        elif isinstance(value, (dict, list)):
            found += non_finite_keys(value, f"{name}.")
    return found


def check_finite(config: dict) -> None:
    """ConfigError naming the key unless every number in the config is finite."""
    if bad := non_finite_keys(config):
        raise ConfigError(f"{', '.join(bad)}: must be a finite number")


def data_fingerprint(*splits) -> str:
    """16-hex hash of the examples a run reads (train, eval), in order: other data, another
    hash; the same data under another path, the same one."""
    digest = hashlib.sha256()
    for examples in splits:
        for example in examples:
            digest.update(json.dumps(vars(example), sort_keys=True).encode())
            digest.update(b"\n")
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def file_digests(files: dict[str, str]) -> dict[str, str]:
    """Config key -> 16-hex SHA-256 of the contents of the file or folder it names (ConfigError
    naming the key if it cannot be read)."""
    from promptscale.files import contents_sha256

    digests = {}
    for key, path in files.items():
        try:
            digests[key] = contents_sha256(path)[:16]
        except OSError as err:
            raise ConfigError(f"{key}={path}: cannot be read ({err.strerror or err})") from None
    return digests


def config_hash(config: dict) -> str:
    """Stable 12-hex hash of the resolved config (with ``data.fingerprint``, the examples read,
    and ``file_digests``, the contents' digests of other files and folders the run reads, which stand
    for their paths), without the keys in NOT_IDENTITY, nor the ADDED_SETTINGS at their neutral value."""
    digested = set(config.get("file_digests") or {})  # "method.init_file": the digest, not the path
    identity = {}
    for key, value in config.items():
        if key in NOT_IDENTITY and NOT_IDENTITY[key] is None:
            continue
        if key in NOT_IDENTITY:
            value = {k: v for k, v in value.items() if k not in NOT_IDENTITY[key]}
        if isinstance(value, dict):
            value = {
                k: v
                for k, v in value.items()
                if ADDED_SETTINGS.get((key, k), ...) != v and f"{key}.{k}" not in digested
            }
        identity[key] = value
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe(folder: Path) -> None:
    """OSError unless a file can be created in ``folder``. Nothing is left behind: a missing folder
    is not made (bad input found later must leave no run dir); its nearest existing ancestor must
    then be a folder where files can be created."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-check-")
    os.close(fd)
    os.unlink(probe)


def check_writable(results_file: Path, out_dir: Path) -> None:
    """StoreError (one line) unless the run dir and the results store can be written: checked
    before any model loads, writing nothing (a missing store is not created yet)."""
    results_file, out_dir = Path(results_file), Path(out_dir)
    try:
        _probe(out_dir)
    except OSError as err:
        raise StoreError(f"run dir {out_dir} cannot be written: {err.strerror or err}") from None
    try:
        if results_file.exists() or results_file.is_symlink():
            fd = os.open(results_file, os.O_WRONLY | os.O_APPEND)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):  # /dev/full, a pipe: no atomic appends there
                    raise StoreError(f"results_file {results_file} is not a regular file")
            finally:
                os.close(fd)
        else:
            _probe(results_file.parent)
    except OSError as err:
        what = "is a directory" if err.errno == errno.EISDIR else f"cannot be written: {err.strerror or err}"
        raise StoreError(f"results_file {results_file} {what}") from None
    for path in {_nearest_existing(out_dir), _nearest_existing(results_file.parent)}:
        if shutil.disk_usage(path).free == 0:
            raise no_space(path)


def _repair_tail(fd: int, path: Path) -> None:
    """Under the store's lock: if the last line has no newline (its writer was killed mid-write),
    cut it off, keeping its bytes in ``<store>.torn``, and say so in one line."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    cut, end = 0, size
    while end > 0:  # the last newline, read backwards in blocks
        start = max(0, end - (1 << 20))
        block = os.pread(fd, end - start, start)
        if (i := block.rfind(b"\n")) >= 0:
            cut = start + i + 1
            break
        end = start
    torn = path.with_name(path.name + ".torn")
    try:
        with open(torn, "ab") as out:
            out.write(os.pread(fd, size - cut, cut) + b"\n")
        kept = f"kept in {torn}"
    except OSError:
        kept = "not kept"
    os.ftruncate(fd, cut)
    _warn(f"{path}: cut off a torn last line ({size - cut} bytes at byte {cut}, {kept}) before appending")


def append_result(path: Path, record: dict) -> None:
    """Append one line under an exclusive lock (after repairing a torn tail), then fsync:
    concurrent writers never interleave; a failed write (no space) is undone; a writer killed
    mid-write leaves a torn tail that no reader takes for a record and the next writer cuts off."""
    path = Path(path)
    line = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode()  # NaN is not JSON
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as err:
        raise (no_space(path) if is_no_space(err) else StoreError(f"cannot append to {path}: {err}")) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _repair_tail(fd, path)
        start = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:  # a regular file may take a large write in parts
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as err:
            os.ftruncate(fd, start)  # no half line stays behind
            raise (no_space(path) if is_no_space(err) else StoreError(f"cannot append to {path}: {err}")) from err
    finally:
        os.close(fd)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def store_lines(path: Path) -> Iterator[tuple[str, dict | None]]:
    """(``file:line``, record) per non-empty line of a store; ``None`` for a line that is not a
    JSON object (torn by a crash, half-written right now, garbage, NaN), with one warning naming
    ``file:line``. The one reader of stores: runs, the table and ``sensitivity`` use it."""
    with Path(path).open("rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw, parse_constant=_no_constant)
            except ValueError:  # JSONDecodeError, UnicodeDecodeError, NaN
                record = None
            if not isinstance(record, dict):
                why = "an incomplete last line" if not raw.endswith(b"\n") else "not a JSON object"
                _warn(f"{path}:{number}: skipped, {why}")
                record = None
            yield f"{path}:{number}", record


def read_results(path: Path) -> list[dict]:
    """The records of a store, less its unreadable lines (each named in a warning)."""
    return [record for _, record in store_lines(path) if record is not None]


def finished_record(path: Path, key: str) -> dict | None:
    """The finished line of config hash ``key`` in the store, if any."""
    if not Path(path).is_file():
        return None
    return next((r for r in read_results(path) if r.get("config_hash") == key and r.get("status") == "finished"), None)


class Claim:
    """A config hash claimed in a store while a process runs it: an exclusive ``flock`` on
    ``<store>.claims/<hash>``, released when the process ends however it ends (a crash too).
    ``acquire`` returns None when claimed, or who holds it (another sweep is running it)."""

    def __init__(self, store: Path, key: str):
        self.path = Path(store).with_name(Path(store).name + ".claims") / key
        self.fd: int | None = None

    def acquire(self) -> str | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            return holder or "another process"
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode(), 0)
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# the libraries whose versions can change a run's numbers (kernels, tokenization, training loop); a
# result line records them, so that a table can say when it mixes runs of different versions
LIBRARIES = ("torch", "transformers", "tokenizers", "peft", "lightning")


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
