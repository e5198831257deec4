"""Pretraining speed: this trainer's MoCo step against a plain fp32 reference, and the whole loop.

One run, one device, one model and batch: prints images/s of (a) the trainer's step (the
`MoCo` module with fused momentum update; on CUDA also bf16 autocast, channels_last and, with
--compile, torch.compile), (b) a plain fp32 reference MoCo v2 step written the straightforward
way (per-tensor momentum loop, fp32, contiguous, no compile; same split-BN), their ratio,
(c) the data path alone on a real corpus (decoded once, batched augmentation in this process;
images/s of view pairs) and (d) the training loop as pretrain@ runs it: data path + step, and
its ratio to (a). Needs a corpus: run `make run` (or `dvc repro synthesize`) first.
Usage: python bench/pretrain.py [--device cpu|cuda] [--arch resnet18] [--size 64] [--batch 64]
       [--corpus data/world/corpora/object_centric] [--compile]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from demystify.ssl.batch_augment import BatchMoCoV2
from demystify.ssl.datasets import DecodedViews, collate_views, image_items
from demystify.ssl.moco import MoCo, encoder
from demystify.ssl.runtime import Runtime, use_bf16
from demystify.ssl.train import StreamSampler, _moco_step


class ReferenceMoCo(MoCo):
    """The recipe as most people first write it: a Python loop for the momentum update."""

    @torch.no_grad()
    def _momentum_update(self) -> None:
        for q, k in zip(self.encoder_q.parameters(), self.encoder_k.parameters(), strict=True):
            k.data = k.data * self.momentum + q.data * (1.0 - self.momentum)


def _timed_steps(step, steps: int, warmup: int, sync) -> float:
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--queue", type=int, default=4096)
    ap.add_argument("--bn-splits", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--corpus", default="data/world/corpora/object_centric")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    arch = args.arch or ("resnet50" if cuda else "resnet18")
    size = args.size or (224 if cuda else 64)
    batch = args.batch or (256 if cuda else 64)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine())
    print(
        f"device {args.device} ({name}), {os.cpu_count()} cores, torch {torch.__version__}; {arch}, {size} px, "
        f"batch {batch}, queue {args.queue}, bn_splits {args.bn_splits}"
    )

    def make(cls):
        torch.manual_seed(0)
        q = encoder(arch, 128, args.bn_splits)
        model = cls(q, args.queue, 0.999, 0.2, args.bn_splits).to(args.device)
        opt = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad],
            lr=0.03,
            momentum=0.9,
            weight_decay=1e-4,
        )
        return model, opt

    x = torch.randn(batch, 3, size, size, device=args.device)
    y = torch.randn(batch, 3, size, size, device=args.device)
    rt = Runtime(device=args.device)
    bf16 = use_bf16(args.precision, rt)
    print(
        f"  trainer: {'bf16 autocast' if bf16 else 'fp32'}{', channels_last' if cuda else ''}"
        f"{', torch.compile' if args.compile and cuda else ''}"
    )

    model, opt = make(MoCo)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if (args.compile and cuda) else model

    def ours(views=(x, y)):
        loss = _moco_step(forward, views, rt, bf16, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    ref_model, ref_opt = make(ReferenceMoCo)

    def reference():
        logits, labels = ref_model(x, y)
        loss = F.cross_entropy(logits, labels)
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()

    # interleave rounds so drift in a shared machine's speed hits both alike
    t_ours, t_ref = [], []
    for _ in range(3):
        t_ours.append(_timed_steps(ours, args.steps, args.warmup, sync))
        t_ref.append(_timed_steps(reference, args.steps, args.warmup, sync))
    mine, ref = batch * args.steps / min(t_ours), batch * args.steps / min(t_ref)
    print(f"  trainer step        {mine:8.1f} images/s (pairs of views)")
    print(f"  fp32 reference step {ref:8.1f} images/s")
    print(f"  ratio trainer / reference: {mine / ref:.2f}")

    # the data path as pretrain@ runs it: the corpus decoded once, each batch augmented here
    items, _ = image_items(Path(args.corpus))
    augment = BatchMoCoV2(size, 0.5)
    sampler = StreamSampler(len(items), batch, rt, 0)
    dataset = DecodedViews(items, 0)

    def batches(count: int):
        sampler.set_range(0, count)
        collate = functools.partial(collate_views, crop_boxes=augment.crop_boxes)
        for b in DataLoader(
            dataset, batch_size=batch, sampler=sampler, collate_fn=collate, drop_last=True
        ):
            images = b["images"].to(args.device)
            yield tuple(
                augment(images, b["sources"][v], b["regions"][v], b["uniforms"][v])
                for v in range(2)
            )

    t_data, t_loop, t_step = [], [], []
    for _ in range(3):  # interleaved again: loop and step timed on the same warm machine
        t_data.append(_timed(lambda: sum(1 for _ in batches(args.steps)), sync))
        t_loop.append(_timed(lambda: [ours(v) for v in batches(args.steps)], sync))
        t_step.append(_timed(lambda: [ours() for _ in range(args.steps)], sync))
    data, loop, step = (batch * args.steps / min(t) for t in (t_data, t_loop, t_step))
    print(
        f"  data path only      {data:8.1f} images/s (decoded once, batched augmentation; {len(items)} images of "
        f"{args.corpus}) = {data / step:.1f}x the trainer step"
    )
    print(
        f"  training loop       {loop:8.1f} images/s (data path + step) = {loop / step:.2f}x the trainer step "
        f"({step:.1f} images/s in this round)"
    )
    if cuda:
        print(f"  peak GPU memory     {torch.cuda.max_memory_allocated() / 2**30:8.2f} GiB")


def _timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
