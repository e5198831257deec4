"""Checkpoints: the full training state, written atomically, read with weights_only=True.

torch.load does not check the zip's CRCs: 4 KiB overwritten inside a checkpoint loaded, resumed
and trained to NaN. So a resumable checkpoint holds its state serialized as bytes together with
their SHA-256 (one file, still written atomically) and `load` refuses bytes that do not match.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from demystify.backbone import CheckpointError
from demystify.core.io import atomic_path


def rng_state() -> torch.Tensor:
    """The CPU generator's state (data order and augmentations are seeded per pass and sample,
    so this is all the randomness a resumed run needs to carry over)."""
    return torch.get_rng_state()


FORMAT = "demystify-checkpoint-sha256-v1"


def save(path: Path, state: dict, before_commit=None) -> None:
    """Atomic: a kill leaves the previous checkpoint whole. `before_commit` runs once the new one is
    written but not yet in place (the kill-and-resume tests kill the process there)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = torch.frombuffer(
        buffer.getbuffer(), dtype=torch.uint8
    )  # no copy: the buffer outlives it
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(
                {
                    "format": FORMAT,
                    "sha256": hashlib.sha256(payload.numpy()).hexdigest(),
                    "payload": payload,
                },
                fh,
            )
        if before_commit is not None:
            before_commit()


def load(path: Path, expected_fingerprint: str | None = None) -> dict:
    """The state `save` wrote, after its checksum matched; a damaged, foreign or older (checksum-less,
    so unverifiable) file is a CheckpointError naming it and why."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refuses anything but tensors and plain containers
        raise CheckpointError(
            f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if (
        not isinstance(outer, dict)
        or outer.get("format") != FORMAT
        or not isinstance(outer.get("payload"), torch.Tensor)
    ):
        raise CheckpointError(
            f"{path}: holds no checksum (written by an older release or another program), "
            "so it cannot be verified"
        )
    payload = outer["payload"]
    digest = (
        hashlib.sha256(payload.numpy()).hexdigest()
        if payload.dtype == torch.uint8 and payload.dim() == 1
        else None
    )
    if digest != outer.get("sha256"):
        raise CheckpointError(
            f"{path}: damaged (the SHA-256 of its state is {str(digest)[:12]}..., it was "
            f"written as {str(outer.get('sha256'))[:12]}...)"
        )
    try:
        state = torch.load(
            io.BytesIO(payload.numpy().tobytes()), map_location="cpu", weights_only=True
        )
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if expected_fingerprint is not None and state.get("fingerprint") != expected_fingerprint:
        raise CheckpointError(
            f"{path}: written with other settings (fingerprint {state.get('fingerprint')} "
            f"!= {expected_fingerprint})"
        )
    return state
