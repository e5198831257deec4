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

from ..io import atomic_path


class CheckpointError(RuntimeError):
    """A checkpoint or exported backbone that cannot be used; never a silent random init."""


def rng_state() -> torch.Tensor:
    """The CPU generator's state (data order and augmentations are seeded per epoch and sample,
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


def require_finite(state: dict, what: str) -> dict:
    """`state` unchanged if every floating tensor in it is finite; else a CheckpointError naming how
    many are not (a backbone of NaN weights must never be exported or evaluated)."""
    tensors = {
        k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
    }
    bad = [k for k, v in tensors.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"{what}: {len(bad)} of {len(tensors)} tensors hold NaN or infinite values "
            f"(first: {bad[0]})"
        )
    return state


# The query encoder's prefix in MoCo checkpoints: v1/v2 (facebookresearch/moco builder.py:
# `encoder_q`, beside `encoder_k`, `queue` and `queue_ptr`), v3 (moco-v3: `base_encoder`, beside
# `momentum_encoder` and `predictor`). Only the query encoder is the learned backbone: main_lincls.py
# keeps `module.encoder_q.*` minus `module.encoder_q.fc.*` and drops every other key; so do we.
_QUERY_ENCODERS = ("encoder_q.", "base_encoder.")
# prefixes other exports put before torchvision's keys
_WRAPPERS = ("backbone.", "net.")
# heads: torchvision's classifier, the official MoCo v2 MLP (fc.0/fc.2) and this project's
# projection head (encoder_q is Sequential(backbone, head): `0.` the backbone, `1.` the head)
_HEADS = ("fc.", "head.")


def plain_resnet_state(state: dict) -> dict:
    """A torchvision ResNet state dict from a plain export, a torchvision file, a DDP checkpoint or
    a MoCo v1/v2/v3 checkpoint (`state_dict`/`model` unwrapped, the query encoder kept, the key
    encoder, queue, predictor and heads dropped)."""
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    state = {
        (k[len("module.") :] if isinstance(k, str) and k.startswith("module.") else k): v
        for k, v in state.items()
    }
    for prefix in _QUERY_ENCODERS:
        if any(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {
                k[len(prefix) :]: v
                for k, v in state.items()
                if isinstance(k, str) and k.startswith(prefix)
            }
            if all(
                k.startswith(("0.", "1.")) for k in state
            ):  # this project's Sequential(backbone, head)
                state = {k[2:]: v for k, v in state.items() if k.startswith("0.")}
            break
    out = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            continue
        for prefix in _WRAPPERS:
            key = key.removeprefix(prefix)
        if not key.startswith(_HEADS):
            out[key] = value
    return out


def read_backbone(path: str | Path) -> dict:
    """A backbone's plain ResNet state dict (exported, or a foreign ResNet checkpoint); a file that
    is missing or not a state dict is refused by name."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: backbone not found (run its pretrain stage, or check the path)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    state = plain_resnet_state(state)
    if not isinstance(state.get("conv1.weight"), torch.Tensor):
        raise CheckpointError(
            f"{path}: no ResNet stem (conv1.weight) among its keys {sorted(state)[:4]}"
        )
    return state


def load_backbone(path: str | Path, model: torch.nn.Module, state: dict | None = None) -> None:
    """Load a backbone (exported, or a foreign ResNet checkpoint) strictly; a mismatch names the
    file and the offending keys or shapes, never leaving a silent random init. `state`: the file's
    read_backbone, when already read."""
    state = read_backbone(path) if state is None else state
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{path}: does not fit the model (another architecture?): missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}, shapes {shapes[:2]}"
        )
    require_finite(state, f"{path}")
    model.load_state_dict(state, strict=True)


def backbone_from(path: str | Path, arch: str) -> torch.nn.Module:
    """`arch` (fc = Identity) at the width its file was trained at (pretrain.width), loaded strictly."""
    # moco imports torchvision: only where a model is built
    from .moco import backbone, backbone_width

    state = read_backbone(path)
    width = backbone_width(state)
    try:
        net = backbone(arch, width=width)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    load_backbone(path, net, state)
    return net
