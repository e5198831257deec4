"""MoCo v2 (He et al. 2020; Chen et al. 2020) in one small module, after the official
`moco/builder.py`: a query encoder, a momentum key encoder, an MLP projection head, and a queue
of keys kept as registered buffers (so a checkpoint holds it).

Batch-norm leakage: within one batch, BN statistics would let a key "see" its own query's batch
and cheat. The official code shuffles keys across GPUs (shuffle-BN), which only works under DDP.
Here every BN of both encoders is a `SplitBatchNorm` that normalises `bn_splits` sub-batches
separately (as if each were one GPU), and the keys are shuffled across those sub-batches before
the key encoder and unshuffled after: a key never shares BN statistics with its own query. In
eval mode it is a plain BatchNorm.

Under DDP (W processes) the groups are those of the global batch: process r holds the global
positions r, r + W, ... (train.StreamSampler) and its bn_splits / W local groups are global
groups (local index i is global position i W + r, so local group i % (s/W) is global group
(i % (s/W)) W + r). The keys take the official cross-process shuffle (`_batch_shuffle_ddp`): all
keys gathered in global order, one global permutation, each process encodes the shuffled
positions it owns, the encoded keys gathered and unshuffled. Running BN statistics are averaged
over processes after each backward (the mean of the groups' updates, as on one process), so W
processes compute what one process computes at the same global batch, up to float order.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from demystify.backbone import backbone, feature_dim


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed per sub-batch (state-dict compatible).
    Sample n of a batch belongs to group n % num_splits."""

    def __init__(self, num_features: int, num_splits: int, **kw):
        super().__init__(num_features, **kw)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not self.training or self.num_splits <= 1:
            return super().forward(x)
        if n % self.num_splits:
            raise ValueError(f"batch of {n} does not split into {self.num_splits} BN groups")
        if x.is_contiguous():  # NCHW: the fused kernel on a free reshape, groups as channels
            return self._fused(x)
        return self._grouped(x)

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        mean_split = self.running_mean.repeat(self.num_splits)
        var_split = self.running_var.repeat(self.num_splits)
        out = F.batch_norm(
            x.reshape(-1, c * self.num_splits, h, w),
            mean_split,
            var_split,
            self.weight.repeat(self.num_splits),
            self.bias.repeat(self.num_splits),
            True,
            self.momentum,
            self.eps,
        ).reshape(n, c, h, w)
        self.running_mean.copy_(mean_split.view(self.num_splits, c).mean(0))
        self.running_var.copy_(var_split.view(self.num_splits, c).mean(0))
        return out

    def _grouped(self, x: torch.Tensor) -> torch.Tensor:
        """Any other layout (channels_last on the GPU): the same groups as a view [N/s, s, C, H, W]
        and statistics in fp32, so the activations are never copied into NCHW (the fused path's
        reshape of a channels_last tensor is a full copy, at every BN layer)."""
        n, c, h, w = x.shape
        s = self.num_splits
        groups = x.view(n // s, s, c, h, w).float()
        var, mean = torch.var_mean(
            groups, dim=(0, 3, 4), unbiased=False, keepdim=True
        )  # [1, s, C, 1, 1]
        scale = self.weight.float().view(1, 1, c, 1, 1) * torch.rsqrt(var + self.eps)
        out = (groups - mean) * scale + self.bias.float().view(1, 1, c, 1, 1)
        with torch.no_grad():  # as F.batch_norm per group, then the groups' average (as _fused)
            count = (n // s) * h * w
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.view(s, c).mean(0), alpha=m)
            self.running_var.mul_(1 - m).add_(
                (var.view(s, c) * (count / max(count - 1, 1))).mean(0), alpha=m
            )
        return out.to(x.dtype).view(n, c, h, w)


class SplitBatchNorm1d(nn.Module):
    """`SplitBatchNorm` for (N, C) features (the projection head's hidden layer)."""

    def __init__(self, num_features: int, num_splits: int):
        super().__init__()
        self.bn = (
            SplitBatchNorm(num_features, num_splits)
            if num_splits > 1
            else nn.BatchNorm2d(num_features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x[:, :, None, None]).flatten(1)


def split_norm(bn_splits: int):
    """The BN layer factory of a MoCo encoder: SplitBatchNorm over `bn_splits` groups (plain BN for 1)."""

    def norm(c: int) -> nn.Module:
        return SplitBatchNorm(c, bn_splits) if bn_splits > 1 else nn.BatchNorm2d(c)

    return norm


def projection_head(feat: int, dim: int, mlp: bool, head_bn: bool, bn_splits: int) -> nn.Module:
    """MoCo v2's head (Linear-ReLU-Linear), or with `head_bn` a BatchNorm after the hidden layer
    (as SimCLR and MoCo v3 do): it centres the random-init features, whose shared direction the
    plain head otherwise spends the first hundreds of steps unlearning (measured; BENCHMARKS.md)."""
    if not mlp:
        return nn.Linear(feat, dim)
    if head_bn:
        return nn.Sequential(
            nn.Linear(feat, feat, bias=False),
            SplitBatchNorm1d(feat, bn_splits),
            nn.ReLU(inplace=True),
            nn.Linear(feat, dim),
        )
    return nn.Sequential(nn.Linear(feat, feat), nn.ReLU(inplace=True), nn.Linear(feat, dim))


def encoder(
    arch: str, dim: int, bn_splits: int, mlp: bool = True, head_bn: bool = False, width: float = 1.0
) -> nn.Sequential:
    """A query encoder: the ResNet (split BN) and its projection head to `dim`; MoCo copies it for
    the keys. (The official builder.py takes `base_encoder` the same way.)"""
    feat = feature_dim(arch, width)
    return nn.Sequential(
        backbone(arch, width=width, norm_layer=split_norm(bn_splits)),
        projection_head(feat, dim, mlp, head_bn, bn_splits),
    )


class MoCo(nn.Module):
    def __init__(
        self,
        encoder_q: nn.Sequential,  # encoder(): backbone, then the head's last Linear gives dim
        queue_size: int = 65536,
        momentum: float = 0.999,
        temperature: float = 0.2,
        bn_splits: int = 8,  # the encoder's BN groups, over which keys are shuffled
    ):
        super().__init__()
        self.momentum, self.temperature, self.queue_size, self.bn_splits = (
            momentum,
            temperature,
            queue_size,
            bn_splits,
        )
        dim = encoder_q[1][-1].out_features
        self.encoder_q = encoder_q
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def backbone_q(self) -> nn.Module:
        return self.encoder_q[0]

    @torch.no_grad()
    def _momentum_update(self) -> None:
        # k <- m k + (1 - m) q, fused over all parameters (one kernel per op, not per tensor)
        keys, queries = list(self.encoder_k.parameters()), list(self.encoder_q.parameters())
        torch._foreach_mul_(keys, self.momentum)
        torch._foreach_add_(keys, queries, alpha=1 - self.momentum)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """`keys`: the global batch's, in global position order (the queue of one process)."""
        n = keys.shape[0]
        if self.queue_size % n:
            raise ValueError(
                f"queue_size {self.queue_size} is not a multiple of the global batch {n}"
            )
        # the pointer stays a tensor (no int(): torch.compile traces the step without a graph break)
        slots = (self.queue_ptr + torch.arange(n, device=keys.device)) % self.queue_size
        self.queue.index_copy_(1, slots, keys.T.to(self.queue.dtype))
        self.queue_ptr.add_(n).remainder_(self.queue_size)

    def forward(
        self,
        im_q: torch.Tensor,
        im_k: torch.Tensor,
        shuffle: torch.Tensor | torch.Generator | None = None,
    ):
        """InfoNCE logits (N, 1 + K) and their targets (zeros: the positive is column 0). `shuffle`:
        the keys' permutation across BN groups (N,), or a generator to draw it from (shuffle_for)."""
        world = world_size()
        perm = (
            shuffle
            if isinstance(shuffle, torch.Tensor)
            else shuffle_for(im_k.shape[0] * world, shuffle, im_k.device)
        )
        q = F.normalize(self.encoder_q(im_q), dim=1)  # N x dim
        with torch.no_grad():
            self._momentum_update()
            if world == 1:  # shuffle-BN: keys go to other BN sub-batches than their queries
                k = F.normalize(self.encoder_k(im_k[perm]), dim=1)  # N x dim
                k = keys = k[torch.argsort(perm)]
            else:
                k, keys = self._keys_shuffled_across_processes(im_k, perm, world)
        pos = (q * k).sum(1, keepdim=True)  # N x 1
        neg = q @ self.queue.clone().detach()  # N x K
        logits = torch.cat([pos, neg], 1) / self.temperature
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        self._enqueue(keys)
        return logits, labels

    @torch.no_grad()
    def _keys_shuffled_across_processes(self, im_k: torch.Tensor, perm: torch.Tensor, world: int):
        """The official `_batch_shuffle_ddp` / `_batch_unshuffle_ddp` in global positions: `perm`
        (the global batch's, the same on every process) decides which process encodes each key, so
        a key lands in the BN group it has on one process. Returns this process's keys and the
        global batch's (global order, for the queue)."""
        rank = dist.get_rank()
        shuffled = interleave(gather(im_k), world)[perm][
            rank::world
        ]  # shuffled positions j, j % W == rank
        if (
            im_k.is_contiguous(memory_format=torch.channels_last) and not im_k.is_contiguous()
        ):  # the GPU's layout
            shuffled = shuffled.contiguous(memory_format=torch.channels_last)
        mine = F.normalize(self.encoder_k(shuffled), dim=1)
        keys = interleave(gather(mine), world)[torch.argsort(perm)]  # unshuffled, global order
        return keys[rank::world], keys

    @torch.no_grad()
    def average_bn_statistics(self, world: int) -> None:
        """Under DDP, after each backward (a plain BatchNorm's backward checks that its running
        statistics were not changed in place since its forward): every process updated them from
        its own groups, and their mean is the update of all the global batch's groups (the update
        is linear), as on one process. Without it DDP would keep rank 0's (broadcast_buffers)."""
        stats = [
            t
            for m in self.modules()
            if isinstance(m, nn.BatchNorm2d) and m.track_running_stats
            for t in (m.running_mean, m.running_var)
        ]
        flat = torch.cat([t.reshape(-1) for t in stats])
        dist.all_reduce(flat)
        flat /= world
        for t, part in zip(stats, flat.split([t.numel() for t in stats]), strict=True):
            t.copy_(part.view_as(t))


def shuffle_for(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """The shuffle-BN permutation of a (global) batch of n keys, drawn on the CPU (the same on every
    device and process: each draws it from the same seeded generator)."""
    return torch.randperm(n, generator=generator, device="cpu").to(device)


def world_size() -> int:
    """The number of processes of torch.distributed (1 without it)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def interleave(t: torch.Tensor, world: int) -> torch.Tensor:
    """All processes' tensors gathered rank after rank, put in global position order: global
    position i W + r is row i of rank r (train.StreamSampler)."""
    return t.view(world, t.shape[0] // world, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


@torch.no_grad()
def gather(t: torch.Tensor) -> torch.Tensor:
    """All processes' tensors concatenated (a no-op without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)
