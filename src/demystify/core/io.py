"""Atomic writes: anything a later stage reads appears whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp's 0600 is for the temporary only
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; it is renamed to `path` only if the block succeeds.

    A killed process leaves only a dot-prefixed `.<name>.tmp-*` folder, never a partial `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 is for the temporary only
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete `.*.tmp-*` leftovers of killed runs in `folder`; returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return len(stale)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    """NaN and infinities are not JSON (json.dumps writes them anyway, and readers then choke or
    read a number): they are written as null, with one stderr line naming the file and the keys."""
    where: list[str] = []
    clean = finite_or_null(obj, "", where)
    if where:
        print(
            f"{path}: non-finite values written as null at {', '.join(where[:5])}"
            f"{f' (and {len(where) - 5} more)' if len(where) > 5 else ''}",
            file=sys.stderr,
        )
    write_text(path, json.dumps(clean, indent=2, sort_keys=True, allow_nan=False) + "\n")


def finite_or_null(obj: Any, at: str = "", where: list[str] | None = None) -> Any:
    """`obj` with every non-finite float replaced by None (numpy float64 is a float); their places go to `where`."""
    if isinstance(obj, dict):
        return {k: finite_or_null(v, f"{at}.{k}" if at else str(k), where) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_null(v, f"{at}[{i}]", where) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        if where is not None:
            where.append(at or "the top level")
        return None
    return obj


def write_torch(path: str | Path, obj: Any) -> None:
    """torch.save through a file object: given a path, torch names the archive's root folder after
    the file, and the atomic temporary's random name would make equal tensors differ in bytes."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def write_npz(destination: str | Path, /, **arrays) -> None:
    """np.savez, atomically (through a file object, so the name keeps no added suffix)."""
    import numpy as np

    with atomic_path(destination) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def file_md5(path: str | Path, chunk: int = 1 << 20) -> str:
    """MD5 of a file's bytes (DVC's hash, so the two can be compared)."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_parquet(path: str | Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(path: str | Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def worker_context():
    """Multiprocessing context for worker pools: forkserver, never a plain fork. A process that
    has run torch or OpenCV holds thread pools whose locks a forked child inherits mid-use; a
    plain fork then deadlocks (seen: mine_pairs workers hung after rendering in the same process)."""
    import multiprocessing

    return multiprocessing.get_context("forkserver")
