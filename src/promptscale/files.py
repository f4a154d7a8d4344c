"""Writing a file so that a crash never leaves half of it: the one temp-file-then-rename helper
every writer of promptscale uses (predictions, weights, resume checkpoints, scrubbed Hydra files);
the one digest of a file's (or a model folder's) contents; the per-user cache folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
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


# the files of a model folder that transformers reads: weights, configs, tokenizer files, remote code
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".pth", ".gguf", ".model", ".txt", ".tiktoken", ".py")


HEX64 = re.compile(r"[0-9a-f]{64}")


def cache_root() -> Path:
    """Per-user cache (converted models, tiny tokenizers, tokenized data, file digests);
    PROMPTSCALE_CACHE overrides."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("PROMPTSCALE_CACHE") or user_cache_dir("promptscale"))


def stamped_sha256(path: Path) -> str:
    """``file_sha256`` of a file, kept in the cache under its stamp (resolved path, inode, size,
    modification and change times): the gigabytes of a checkpoint are read once, not by every job, rank and
    re-run of a sweep; a file rewritten gets a new stamp."""
    stat = Path(path).stat()
    stamp = f"{Path(path).resolve()}\0{stat.st_ino}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}"
    kept = cache_root() / "digests" / hashlib.sha256(stamp.encode()).hexdigest()
    with contextlib.suppress(OSError, ValueError):  # missing, or not an entry: read the file
        if HEX64.fullmatch(digest := kept.read_text().strip()):
            return digest
    digest = file_sha256(path)
    with contextlib.suppress(OSError), atomic_path(kept) as tmp:  # a cache that cannot be written: no cache
        tmp.write_text(digest)
    return digest


def contents_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's contents, or of a model folder's: the name and contents' digest of
    each file directly in it that transformers reads (``MODEL_FILE_SUFFIXES``; not subfolders such as
    a trainer's ``checkpoint-*``, nor a README), in name order. OSError if it cannot be read."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for p in sorted(path.iterdir()):
        if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES and not p.name.startswith("."):
            digest.update(f"{p.name}\0{stamped_sha256(p)}\n".encode())
    return digest.hexdigest()
