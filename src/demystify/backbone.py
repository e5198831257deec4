"""The backbone every stage shares: a torchvision ResNet at a width, read from a file strictly,
the evaluation transform, and the batched extraction of its pooled features. Pretraining builds and exports it (ssl/), every evaluation reads it
back (evaluation/); neither package imports the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.transforms import v2

FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class CheckpointError(RuntimeError):
    """A checkpoint or exported backbone that cannot be used; never a silent random init."""


def backbone(
    arch: str, num_classes: int | None = None, width: float = 1.0, norm_layer=nn.BatchNorm2d
) -> nn.Module:
    """A torchvision ResNet with the standard stem; `fc` is Identity unless `num_classes` is given.
    `width` scales every layer's channels (0.5: 32-64-128-256, a quarter of the multiply-adds); the
    module and parameter names stay torchvision's, only the shapes shrink.

    The stem is torchvision's (7x7 stride 2 + max-pool) even for 64 px inputs: measured on the
    2-core CPU, a MoCo step runs ~230 images/s with it and ~11 with a CIFAR-style stride-1 stem.
    """
    if arch not in FEATURE_DIMS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(FEATURE_DIMS)}")
    check_width(width)

    net = getattr(torchvision.models, arch)(weights=None, norm_layer=norm_layer)
    if width != 1.0:
        _narrow(net, width, norm_layer)
    feat = feature_dim(arch, width)
    net.fc = nn.Linear(feat, num_classes) if num_classes else nn.Identity()
    return net


def check_width(width: float) -> None:
    if not (0 < width <= 4 and float(64 * width).is_integer()):
        raise ValueError(
            f"width {width}: must be in (0, 4] with 64 x width a whole number of channels"
        )


def feature_dim(arch: str, width: float = 1.0) -> int:
    return int(FEATURE_DIMS[arch] * width)


def backbone_width(state: dict) -> float:
    """The `width` a torchvision-named ResNet state dict was built at (its stem's channels / 64)."""
    return state["conv1.weight"].shape[0] / 64


def _narrow(net: nn.Module, width: float, norm) -> None:
    """Rebuild every conv and BN of a torchvision ResNet at `width` x its channels (the RGB input
    stays 3), initialised as torchvision initialises them (Kaiming fan-out; BN weight 1, bias 0)."""

    def scaled(c: int) -> int:
        return c if c == 3 else int(c * width)

    for module in list(net.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d):
                conv = nn.Conv2d(
                    scaled(child.in_channels),
                    scaled(child.out_channels),
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    bias=child.bias is not None,
                )
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                setattr(module, name, conv)
            elif isinstance(child, nn.BatchNorm2d):
                setattr(module, name, norm(scaled(child.num_features)))


def plain_backbone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict that torchvision's ResNet (with `fc` replaced by Identity) loads with
    strict=True: no `module.`/`encoder_q.` prefixes, no classifier, no projection head."""
    state = module.state_dict()
    return {k: v.detach().clone().cpu() for k, v in state.items() if not k.startswith("fc.")}


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
    state = read_backbone(path)
    width = backbone_width(state)
    try:
        net = backbone(arch, width=width)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    load_backbone(path, net, state)
    return net


def eval_transform(size: int) -> v2.Compose:
    """Resize (no crop) and normalise, as the paper's invariance evaluation does."""
    return v2.Compose(
        [
            v2.Resize((size, size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


@torch.no_grad()
def pooled_features(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    device,
    *,
    bf16: bool = False,
    unit: bool = False,
) -> torch.Tensor:
    """(N, D) float32 on the CPU: `model`'s output (the pooled features of a backbone in eval mode)
    for each batch of images, in order; (0, 0) when there is none. `bf16`: under bfloat16 autocast
    on CUDA (the evaluations); `unit`: L2-normalised on the device (the kNN monitor)."""
    autocast = bf16 and str(device).startswith("cuda")
    out = []
    for x in batches:
        x = x.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16) if autocast else nullcontext():
            feat = model(x).float()
        out.append((F.normalize(feat, dim=1) if unit else feat).cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))
