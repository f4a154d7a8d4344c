"""Writing a file so that a crash never leaves half of it: the one temp-file-then-rename helper
every writer of promptscale uses (predictions, weights, resume checkpoints, scrubbed Hydra files);
and the one digest of a file's (or a folder's) contents."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends normally the file is
    flushed to disk and renamed onto ``path`` (readers see the old file or the whole new one, never
    a part), otherwise removed. The folder is made if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's contents, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# folder digests taken by this process, by the folder's listing (names, sizes, modification times):
# a sweep's jobs do not read the same checkpoint's gigabytes again; a file rewritten changes its stamp
_FOLDER_DIGESTS: dict[tuple, str] = {}


def contents_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's contents, or of a folder's: each file's name relative to the folder
    and its contents' digest, in name order (names starting with "." left out: version control and
    download caches). OSError if it cannot be read."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    files = sorted(
        (p.relative_to(path).as_posix(), p)
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    stamp = (str(path.resolve()), tuple((name, p.stat().st_size, p.stat().st_mtime_ns) for name, p in files))
    if stamp not in _FOLDER_DIGESTS:
        digest = hashlib.sha256()
        for name, p in files:
            digest.update(f"{name}\0{file_sha256(p)}\n".encode())
        _FOLDER_DIGESTS[stamp] = digest.hexdigest()
    return _FOLDER_DIGESTS[stamp]
