"""Where a killed pretraining run resumes from.

The resumable state lives outside DVC's outputs, in `.checkpoints/pretrain/VARIANT/KEY.pt`
(`DEMYSTIFY_CHECKPOINTS` moves the folder), so that `models/VARIANT` and the dvclive folder are
ordinary outputs and DVC can restore the stage from its run-cache. KEY is a hash of everything
that determines the result: the settings, the bytes of every file the run reads (training items
and the kNN monitor split) and the training code. A checkpoint of another key is never resumed;
the stage deletes its own checkpoint once the backbone is exported, and `make clean-checkpoints`
removes what killed runs of settings never finished left behind.

A checkpoint that fails its checksum (checkpoint.py), or has none (an older release's), is never
resumed: it is renamed to `KEY.pt.damaged` with one stderr line naming it and why, and the run
starts from step 0, which gives the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from demystify.backbone import CheckpointError
from demystify.core.digests import list_digest
from demystify.ssl import checkpoint as ckpt

ENV = "DEMYSTIFY_CHECKPOINTS"
DEFAULT_DIR = ".checkpoints"


def checkpoints_root() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT_DIR)


def checkpoint_path(variant: str, key: str) -> Path:
    return checkpoints_root() / "pretrain" / variant / f"{key}.pt"


def data_digest(items: Iterable, files: Iterable[str | Path]) -> str:
    """One hash over what a run reads: the items (paths, boxes, labels, in order) and the
    content MD5 of every distinct file, from the node's digest cache (demystify.core.digests: a second
    start stats the files instead of reading them)."""
    h = hashlib.md5(json.dumps([list(vars(it).values()) for it in items], default=str).encode())
    h.update(list_digest(files).encode())
    return h.hexdigest()


def node_data_digest(
    items: list, files: list[str | Path], first: bool, barrier: Callable[[], None] | None
) -> str:
    """data_digest hashed once per node under DDP: the node's first process (local rank 0) fills the
    node's digest cache while the others wait at `barrier` (every process calls it), then they
    find every file there and only stat it. Without a barrier (one process): data_digest."""
    if barrier is None:
        return data_digest(items, files)
    digest = data_digest(items, files) if first else None
    barrier()
    return digest if digest is not None else data_digest(items, files)


def code_digest() -> str:
    """The training code (this package's modules) and the torch release that runs it."""
    h = hashlib.md5(torch.__version__.encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        h.update(source.name.encode() + b"\0" + source.read_bytes())
    return h.hexdigest()


def resume_key(settings: dict, data_digest: str) -> str:
    blob = json.dumps(
        {"settings": settings, "data": data_digest, "code": code_digest()},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_or_set_aside(path: Path, key: str, stage: str) -> dict | None:
    """The resumable state at `path`, or None (start from step 0): none there, or one that cannot
    be trusted, which is moved aside to `*.damaged` (never resumed, never silently overwritten)."""
    if not path.is_file():
        return None
    try:
        return ckpt.load(path, key)
    except CheckpointError as exc:
        aside = path.with_name(path.name + ".damaged")
        os.replace(path, aside)
        print(
            f"{stage}: not resuming: {exc}; moved it to {aside} and starting from step 0",
            file=sys.stderr,
        )
        return None
