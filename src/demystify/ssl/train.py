"""The `pretrain@VARIANT` training loop: one command on CPU, one GPU, or many through torchrun.

- Device: CUDA when present (bf16 autocast, channels_last, optional torch.compile), else CPU.
- Distributed: under `torchrun` (WORLD_SIZE > 1) DDP with NCCL on GPUs, gloo on CPUs; every
  process takes its shard of one seeded permutation per epoch; keys are gathered before the
  queue; rank 0 alone logs and writes checkpoints.
- Resumable: the full state (encoders, queue and pointer, optimizer, scheduler, step, running
  loss, RNG) is written atomically every `checkpoint_every` steps to models/VARIANT/checkpoint.pt;
  a rerun resumes there and, on CPU, ends with exactly the metrics of an uninterrupted run.
- Logged with dvclive (results/pretrain/VARIANT, dvcyaml=False): loss, lr, images/s per epoch,
  and the kNN top-1 monitor.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from ..config import PretrainParams, VariantParams
from ..io import atomic_path, write_json
from . import checkpoint as ckpt
from .augment import mocov2
from .datasets import DataError, ViewsDataset, image_items, pair_items
from .knn import KnnMonitor
from .moco import MoCo, backbone, plain_backbone_state


class PretrainError(ValueError):
    """Bad settings or data for a variant, found before training starts."""


@dataclass(frozen=True)
class Runtime:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def device_type(self) -> str:
        return "cuda" if self.cuda else "cpu"


def cpu_has_native_bf16() -> bool:
    """avx512_bf16 or AMX: bf16 matrix products run natively (about 1.8x fp32 here, BENCHMARKS.md);
    elsewhere oneDNN emulates them, slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def use_bf16(precision: str, rt: Runtime) -> bool:
    """`auto`: bf16 autocast on CUDA and on CPUs with native bf16, fp32 otherwise."""
    if precision != "auto":
        return precision == "bf16"
    return rt.cuda or cpu_has_native_bf16()


def setup_runtime() -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    return Runtime(rank, world, local, device)


class EpochSampler(Sampler[int]):
    """One seeded permutation per epoch, sharded by rank, whole batches only, from `skip` batches on."""

    def __init__(self, n: int, batch: int, rt: Runtime, seed: int):
        self.n, self.batch, self.rt, self.seed = n, batch, rt, seed
        self.epoch, self.skip = 0, 0
        self.steps = n // (batch * rt.world)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.n, generator=g)[: self.steps * self.batch * self.rt.world]
        return order.view(self.steps, self.rt.world, self.batch)[self.skip :, self.rt.rank].reshape(-1).tolist()

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        return (self.steps - self.skip) * self.batch


def build_data(variant: VariantParams, p: PretrainParams) -> tuple[ViewsDataset, list[str]]:
    data = Path(variant.data)
    transform = mocov2(p.image_size, p.min_crop_scale)
    if variant.positives in ("images", "labels", "none"):
        items, classes = image_items(data, labelled=variant.positives == "labels")
    else:
        items, classes = pair_items(data, Path(p.frames_root), crops=variant.positives == "tracker"), []
    if not items:
        raise DataError(f"{data}: no training images (empty corpus)")
    return ViewsDataset(items, transform, p.seed, labelled=variant.positives == "labels"), classes


def _queue_size(p: PretrainParams, n: int, global_batch: int, name: str) -> int:
    """The queue may hold at most the keys of one pass over the corpus: older keys would be the
    very images of the current batch, encoded earlier (false negatives)."""
    fits = (n // global_batch) * global_batch
    if p.queue_size <= fits and p.queue_size % global_batch == 0:
        return p.queue_size
    clipped = min(fits, (p.queue_size // global_batch) * global_batch) or global_batch
    warnings.warn(f"pretrain@{name}: queue_size {p.queue_size} clipped to {clipped} (corpus of {n} images, "
                  f"global batch {global_batch})", stacklevel=2)
    return clipped


def _model(variant: VariantParams, p: PretrainParams, queue: int, classes: int) -> nn.Module:
    if variant.method == "moco":
        return MoCo(p.arch, p.dim, queue, p.moco_momentum, p.temperature, p.bn_splits, p.mlp, p.head_bn)
    return backbone(p.arch, num_classes=classes if variant.method == "supervised" else None)


def _backbone_of(model: nn.Module) -> nn.Module:
    """The bare ResNet (fc = Identity) that is exported and monitored."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if isinstance(inner, MoCo):
        return inner.backbone_q
    return _FeatureView(inner)


class _FeatureView(nn.Module):
    """A classifier ResNet seen without its fc (for the monitor and export)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        fc, self.net.fc = self.net.fc, nn.Identity()
        try:
            return self.net(x)
        finally:
            self.net.fc = fc

    def state_dict(self, *a, **k):  # export: the ResNet's own keys, classifier dropped later
        return self.net.state_dict(*a, **k)


def train(name: str, variant: VariantParams, p: PretrainParams, models_dir: str | Path, results_dir: str | Path,
          progress: bool = True) -> dict:
    """Train (or resume) one variant; write models/VARIANT/{checkpoint.pt, backbone.pt} and metrics."""
    rt = setup_runtime()
    models_dir, results_dir = Path(models_dir), Path(results_dir)
    torch.manual_seed(p.seed)
    monitor = KnnMonitor(p.monitor, p.image_size, p.monitor_per_class, p.knn_k) if rt.main else None

    if variant.arch and variant.arch != p.arch:
        p = p.model_copy(update={"arch": variant.arch})
    if variant.method in ("random", "external"):  # nothing to train: the init, or a given checkpoint
        model = backbone(p.arch)
        if variant.method == "external":
            ckpt.load_backbone(variant.data, model)
        model = model.to(rt.device)
        return _finish(name, model, p, rt, models_dir, results_dir, monitor, {"loss": None}, steps=0)

    dataset, classes = build_data(variant, p)
    global_batch = p.batch_size * rt.world
    if global_batch > len(dataset):
        raise PretrainError(f"pretrain@{name}: batch {global_batch} ({p.batch_size} x {rt.world} processes) is larger "
                            f"than the corpus {variant.data} ({len(dataset)} items)")
    queue = _queue_size(p, len(dataset), global_batch, name) if variant.method == "moco" else 0
    model = _model(variant, p, queue, len(classes)).to(rt.device)
    cuda = rt.cuda
    bf16 = use_bf16(p.precision, rt)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    trainable = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=p.lr * global_batch / 256, momentum=p.sgd_momentum,
                                weight_decay=p.weight_decay)
    sampler = EpochSampler(len(dataset), p.batch_size, rt, p.seed)
    per_epoch = sampler.steps if not p.max_steps_per_epoch else min(sampler.steps, p.max_steps_per_epoch)
    total = max(1, per_epoch * p.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))

    settings = {"variant": variant.model_dump(), "pretrain": p.model_dump(exclude={"workers", "checkpoint_every"}),
                "world": rt.world, "queue": queue}
    fingerprint = ckpt.fingerprint(settings)
    path = models_dir / "checkpoint.pt"
    step, loss_sum, loss_n = 0, 0.0, 0
    resumed = False
    if path.is_file():
        try:
            state = ckpt.load(path, fingerprint)
        except ckpt.CheckpointError as exc:
            if rt.main:
                print(f"pretrain@{name}: not resuming ({exc}); starting afresh", file=sys.stderr)
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            step, loss_sum, loss_n = int(state["step"]), float(state["loss_sum"]), int(state["loss_n"])
            resumed = True
            if rt.main:
                print(f"pretrain@{name}: resuming at step {step} of {total}", file=sys.stderr)

    if rt.world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[rt.local_rank] if cuda else None)
    step_fn = _moco_step if variant.method == "moco" else _supervised_step
    forward = torch.compile(model) if (p.compile and cuda) else model
    live = _live(results_dir, resumed) if rt.main else None
    bar = tqdm(total=total, initial=step, desc=f"pretrain@{name}", unit="step", file=sys.stderr,
               disable=not (progress and rt.main))
    history = {}
    while step < total:
        epoch, skip = divmod(step, per_epoch)
        sampler.set_epoch(epoch, skip)
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=p.batch_size, sampler=sampler, num_workers=p.workers, drop_last=True,
                            pin_memory=cuda, persistent_workers=False)
        started, images = time.perf_counter(), 0
        for batch in loader:
            if step >= (epoch + 1) * per_epoch:
                break
            loss = step_fn(forward, batch, rt, bf16, torch.Generator().manual_seed(p.seed * 7919 + step))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            value = float(loss.detach())
            loss_sum, loss_n = loss_sum + value, loss_n + 1
            images += global_batch
            bar.update()
            bar.set_postfix(loss=f"{value:.3f}", img_s=f"{images / (time.perf_counter() - started):.0f}")
            if rt.main and (step % p.checkpoint_every == 0 or step == total):
                _save(path, model, optimizer, scheduler, step, loss_sum, loss_n, fingerprint)
        if step % per_epoch == 0 or step == total:  # an epoch ended
            history = {"loss": loss_sum / max(loss_n, 1), "lr": scheduler.get_last_lr()[0],
                       "images_per_s": images / max(time.perf_counter() - started, 1e-9)}
            if rt.main:
                history["knn_top1"] = monitor(_backbone_of(model), rt.device)
                _save(path, model, optimizer, scheduler, step, 0.0, 0, fingerprint)
                for key, value in history.items():
                    live.log_metric(f"train/{key}" if key != "knn_top1" else "monitor/knn_top1", value,
                                    timestamp=False)
                live.next_step()
            loss_sum, loss_n = 0.0, 0
    bar.close()
    if live is not None:
        live.end()
    return _finish(name, model, p, rt, models_dir, results_dir, monitor, history, steps=step)


def _moco_step(model, batch, rt: Runtime, bf16: bool, generator: torch.Generator):
    im_q, im_k = (b.to(rt.device, non_blocking=True) for b in batch)
    if rt.cuda:
        im_q, im_k = (x.contiguous(memory_format=torch.channels_last) for x in (im_q, im_k))
    with torch.autocast(rt.device_type, dtype=torch.bfloat16, enabled=bf16):
        logits, labels = model(im_q, im_k, generator)
        return F.cross_entropy(logits.float(), labels)


def _supervised_step(model, batch, rt: Runtime, bf16: bool, generator: torch.Generator):
    x, y = batch[0].to(rt.device, non_blocking=True), batch[1].to(rt.device)
    if rt.cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(rt.device_type, dtype=torch.bfloat16, enabled=bf16):
        return F.cross_entropy(model(x).float(), y)


def _save(path: Path, model, optimizer, scheduler, step: int, loss_sum: float, loss_n: int, fingerprint: str) -> None:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    ckpt.save(path, {"model": inner.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "step": step, "loss_sum": loss_sum, "loss_n": loss_n,
                     "rng": ckpt.rng_state(), "fingerprint": fingerprint})


def _live(results_dir: Path, resume: bool):
    from dvclive import Live

    return Live(dir=str(results_dir), dvcyaml=False, save_dvc_exp=False, resume=resume, report=None)


def _finish(name: str, model, p: PretrainParams, rt: Runtime, models_dir: Path, results_dir: Path, monitor,
            history: dict, steps: int) -> dict:
    result = {}
    if rt.main:
        bb = _backbone_of(model)
        knn = monitor(bb, rt.device) if history.get("knn_top1") is None else history["knn_top1"]
        models_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(models_dir / "backbone.pt") as tmp:
            torch.save(plain_backbone_state(bb), tmp)
        result = {"variant": name, "arch": p.arch, "steps": steps, "final_loss": history.get("loss"),
                  "knn_top1": round(knn, 4), "knn_chance": round(monitor.chance, 4)}
        write_json(results_dir / "summary.json", result)
    if rt.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result
