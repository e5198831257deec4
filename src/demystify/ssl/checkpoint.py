"""Checkpoints: the full training state, written atomically, read with weights_only=True."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..io import atomic_path


class CheckpointError(RuntimeError):
    """A checkpoint or exported backbone that cannot be used; never a silent random init."""


def fingerprint(settings: dict) -> str:
    """Hash of everything that shapes a run: a checkpoint of other settings is not resumed."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rng_state() -> torch.Tensor:
    """The CPU generator's state (data order and augmentations are seeded per epoch and sample,
    so this is all the randomness a resumed run needs to carry over)."""
    return torch.get_rng_state()


def save(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: Path, expected_fingerprint: str | None = None) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refuses anything but tensors and plain containers
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})") from None
    if expected_fingerprint is not None and state.get("fingerprint") != expected_fingerprint:
        raise CheckpointError(f"{path}: written with other settings (fingerprint {state.get('fingerprint')} "
                              f"!= {expected_fingerprint})")
    return state


def load_backbone(path: str | Path, model: torch.nn.Module) -> None:
    """Load an exported backbone.pt strictly; a mismatch names the offending keys."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: backbone not found (run its pretrain stage)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = [], []
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        own = set(model.state_dict())
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        raise CheckpointError(f"{path}: does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}") from None
