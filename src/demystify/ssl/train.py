"""The `pretrain@VARIANT` training loop: one command on CPU, one GPU, or many through torchrun.

- Device: CUDA when present (bf16 autocast, channels_last, optional torch.compile), else CPU
  (runtime.py: the device, the process group, the precision).
- Methods: what a variant's method builds, how it steps and augments, whether it trains at all
  (random and external export the backbone as built or read) come from core/methods.py.
- Data: the corpus decoded once and held as uint8 (streamed by loader workers when it exceeds
  machine.yaml's `pretrain.resident_mb`); each batch is augmented whole, in this process and on its device
  (batch_augment.BatchMoCoV2: MoCo v2's augmentations, per-sample randomness; crop and flip only
  for the supervised baseline).
- Distributed: under `torchrun` (WORLD_SIZE > 1) DDP with NCCL on GPUs, gloo on CPUs. DDP is the
  recipe: `pretrain.batch_size` is the global batch, each of W processes takes every W-th position
  of it (StreamSampler), lr, steps and samples_seen are those of one process at that batch, and
  `bn_splits` counts BN groups of the global batch (bn_splits / W per process, moco.py's
  cross-process shuffle-BN): W processes compute what one computes, up to float order. The
  supervised baseline keeps plain per-process BN (no such equality). Rank 0 alone logs and writes
  checkpoints (DEMYSTIFY_CHECKPOINTS: a folder every node sees, so a restart on another node resumes).
- Resumable: the full state (encoders, queue and pointer, optimizer, scheduler, step, running
  loss, the periods logged so far, RNG) is written atomically every `checkpoint_every` steps (machine.yaml) and at
  every logging period's end to `.checkpoints/pretrain/VARIANT/KEY.pt` (resume.py: KEY hashes the settings,
  the data's bytes and the code); a rerun of the same KEY resumes there and, on CPU, ends with
  exactly the outputs of an uninterrupted run. Rank 0 reads it and broadcasts it to every process.
- Outputs: models/VARIANT/backbone.pt and results/pretrain/VARIANT (dvclive, dvcyaml=False: loss,
  lr and the kNN top-1 monitor every `log_every` steps, dvclive's step the optimizer step; summary.json, with the budget and the share
  of same-source negatives), the same bytes for the same inputs, so
  DVC can cache the stage and restore it from its run-cache.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from demystify import machine as machine_settings
from demystify.backbone import (
    backbone,
    backbone_from,
    feature_dim,
    plain_backbone_state,
    require_finite,
)
from demystify.core import frames_store
from demystify.core.config import PretrainParams, VariantParams
from demystify.core.gate import require_passed
from demystify.core.images import image_size
from demystify.core.io import write_json, write_torch
from demystify.core.methods import METHODS, Method
from demystify.ssl import checkpoint as ckpt
from demystify.ssl import resume
from demystify.ssl.batch_augment import BatchMoCoV2, for_method
from demystify.ssl.datasets import (
    DataError,
    DecodedViews,
    collate_views,
    has_frame_hashes,
    image_instances,
    image_items,
    pair_items,
    pair_sources,
    same_source_share,
)
from demystify.ssl.knn import MONITOR_SPLITS, KnnMonitor
from demystify.ssl.moco import MoCo, encoder, shuffle_for
from demystify.ssl.runtime import (
    PretrainError,
    Runtime,
    setup_runtime,
    teardown,
    use_bf16,
)


class StreamSampler(Sampler[tuple[int, int]]):
    """Global steps [start, stop) of an endless stream of seeded permutations of the corpus: step s
    takes stream positions [s * B, (s + 1) * B) for the global batch B, and process r of W the
    positions r, r + W, r + 2W, ... of it (interleaved, so its i-th sample is global position
    i W + r and sits in the BN group it has on one process: moco.py). A variant trains a number of
    steps, not of passes, so variants of different corpus sizes get the same budget; position q is
    item perm_{q // n}[q % n]. Yields (index, pass), which seeds the sample's augmentation."""

    def __init__(self, n: int, batch: int, rt: Runtime, seed: int):
        self.n, self.batch, self.rt, self.seed = n, batch, rt, seed  # batch: the global batch
        self.start, self.stop = 0, 0
        self._perms: dict[int, list[int]] = {}

    def set_range(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def _perm(self, pass_: int) -> list[int]:
        if pass_ not in self._perms:
            self._perms = {
                pass_: torch.randperm(
                    self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + pass_)
                ).tolist()
            }  # one pass held at a time
        return self._perms[pass_]

    def step_items(self, step: int) -> list[tuple[int, int]]:
        """This process's (index, pass) of global step `step`."""
        first = step * self.batch + self.rt.rank
        return [
            (self._perm(q // self.n)[q % self.n], q // self.n)
            for q in range(first, first + self.batch, self.rt.world)
        ]

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield from self.step_items(step)

    def __len__(self) -> int:
        return (self.stop - self.start) * (self.batch // self.rt.world)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor: linear warm-up over `warmup` steps, then cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (
        1 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1))
    )


# how each kind of pair positives cuts its two views out of a pair of the manifest
PAIR_VIEWS = {
    "temporal": {"crops": False},  # whole frames a and b
    "tracker": {"crops": True},  # box a in frame a, box b in frame b
    "crops": {"crops": True, "same_crop": True},
}  # box a in frame a, twice


def build_data(
    variant: VariantParams, p: PretrainParams, resident_mb: int | None = None
) -> tuple[DecodedViews, list[str], list[str]]:
    """The dataset, its classes, and the files whose bytes determine it (for the resume key): the
    pairs manifest alone when it records its frames' MD5s (verified on reading), else every image.
    The images are decoded once and held when they fit in `resident_mb` (None: machine.yaml's), else streamed."""
    data = Path(variant.data)
    if variant.positives in ("images", "labels", "none"):
        items, classes = image_items(data, labelled=variant.positives == "labels")
        files = [frames_store.container(it.path_a) for it in items]  # a frame's zip, not the frame
    else:
        items, classes = pair_items(data, Path(p.frames_root), **PAIR_VIEWS[variant.positives]), []
        hashed = has_frame_hashes(pq.read_schema(data).names)
        files = (
            [str(data)]
            if hashed
            else [frames_store.container(f) for it in items for f in (it.path_a, it.path_b) if f]
        )
    if not items:
        raise DataError(f"{data}: no training images (empty corpus)")
    labelled = variant.positives == "labels"
    # every header read now (readable, an image, under the pixel cap): a streamed corpus names its bad
    # file before training, not when a loader worker first draws it, possibly hours in
    paths = dict.fromkeys(
        q for it in items for q in (it.path_a, it.path_b) if q
    )  # a frame is in many pairs
    sizes = {q: image_size(q, DataError) for q in paths}
    if resident_mb is None:
        resident_mb = machine_settings.load().resident_mb
    return (
        DecodedViews(items, p.seed, labelled, resident=_fits_in_memory(sizes, resident_mb)),
        classes,
        files,
    )


def negative_share(variant: VariantParams, dataset: DecodedViews) -> float | None:
    """How likely a random MoCo queue key comes from the query's own video (pair positives) or object
    instance (an image corpus whose annotations.csv names each image's instance): such negatives are
    the same object as the positive. None without a queue or without a record of the sources."""
    if not METHODS[variant.method].queue:
        return None
    if variant.positives in PAIR_VIEWS:
        sources = pair_sources(Path(variant.data))
    else:
        sources = image_instances(Path(variant.data), [it.path_a for it in dataset.items])
    return None if sources is None else round(same_source_share(sources), 6)


def _fits_in_memory(sizes: dict[str, tuple[int, int]], resident_mb: int) -> bool:
    """Whether the decoded corpus (RGB uint8: 3 bytes a pixel of every image, sizes from the
    headers) fits in `resident_mb`."""
    if not sizes or resident_mb <= 0:
        return False
    return sum(3 * w * h for w, h in sizes.values()) <= resident_mb * 2**20


def _batches(loader: DataLoader):
    """The loader's batches; a DataError raised in a loader worker (torch re-raises it here with
    the worker's whole traceback in its message) becomes the one line it is without workers."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except DataError as exc:
            raise DataError(worker_message(str(exc))) from None
        yield batch


def worker_message(message: str) -> str:
    """The original message of an exception torch carried over from a loader worker ("Caught X in
    DataLoader worker process N. Original Traceback ... module.X: message"); others unchanged."""
    lines = message.rstrip().splitlines()
    if len(lines) < 2 or not lines[0].startswith("Caught ") or "DataLoader worker" not in lines[0]:
        return message
    last = lines[-1]
    head, sep, rest = last.partition(": ")
    return rest if sep and head.rsplit(".", 1)[-1].isidentifier() and " " not in head else last


def _queue_size(p: PretrainParams, n: int, global_batch: int, name: str) -> int:
    """The queue may hold at most the keys of one pass over the corpus: older keys would be the
    very images of the current batch, encoded earlier (false negatives)."""
    fits = (n // global_batch) * global_batch
    if p.queue_size <= fits and p.queue_size % global_batch == 0:
        return p.queue_size
    clipped = min(fits, (p.queue_size // global_batch) * global_batch) or global_batch
    warnings.warn(
        f"pretrain@{name}: queue_size {p.queue_size} clipped to {clipped} (corpus of {n} images, "
        f"global batch {global_batch})",
        stacklevel=2,
    )
    return clipped


def process_share(name: str, method: str, p: PretrainParams, world: int) -> tuple[int, int]:
    """Each process's batch and BN groups: `pretrain.batch_size` and `bn_splits` are the global
    batch's, every process holds an equal share. config.py already refuses a batch that does not
    split into bn_splits groups of 2 or more; with bn_splits a multiple of W, each process's batch
    then splits into its bn_splits / W groups too."""
    if p.batch_size % world:
        raise PretrainError(
            f"pretrain@{name}: pretrain.batch_size {p.batch_size} (the global batch) does not "
            f"divide among {world} processes (remainder {p.batch_size % world})"
        )
    if not METHODS[method].split_bn or world == 1:  # plain BN of each process's own batch
        return p.batch_size // world, p.bn_splits
    if (
        p.bn_splits % world
    ):  # a group split across processes: keys would share BN with their queries
        raise PretrainError(
            f"pretrain@{name}: pretrain.bn_splits {p.bn_splits} (BN groups of the global batch) is "
            f"not a multiple of the {world} processes (remainder {p.bn_splits % world}): a key would "
            f"share BN statistics with its own query; use bn_splits {world} or a multiple of it"
        )
    return p.batch_size // world, p.bn_splits // world


class Classifier(nn.Module):
    """The supervised baseline: the backbone (fc = Identity) and a linear head over the classes.
    Drawn from the RNG as torchvision's classifier is (the network, then its last layer), its
    parameters in the same order (the backbone's, then the head's)."""

    def __init__(self, arch: str, classes: int, width: float):
        super().__init__()
        self.backbone = backbone(arch, width=width)
        self.head = nn.Linear(feature_dim(arch, width), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_model(run: Run, queue: int, classes: int, bn_splits: int) -> nn.Module:
    """The model of the variant's method (core/methods.py); bn_splits: this process's BN groups."""
    p = run.p
    match run.method.model:
        case "moco":
            q = encoder(p.arch, p.dim, bn_splits, p.mlp, p.head_bn, p.width)
            return MoCo(q, queue, p.moco_momentum, p.temperature, bn_splits)
        case "classifier":
            return Classifier(p.arch, classes, p.width)
        case "file":  # the external checkpoint at the width it was trained at
            return backbone_from(run.variant.data, p.arch)
    return backbone(p.arch, width=p.width)  # the init at pretrain.width


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, without DDP's wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def backbone_of(model: nn.Module) -> nn.Module:
    """The bare ResNet (fc = Identity) that is monitored and exported: MoCo's query encoder's, the
    classifier's, or the model itself (random, external)."""
    inner = unwrap(model)
    if isinstance(inner, MoCo):
        return inner.backbone_q
    if isinstance(inner, Classifier):
        return inner.backbone
    return inner


def effective_params(variant: VariantParams, p: PretrainParams) -> PretrainParams:
    """pretrain as this variant trains with it: its own arch and seed where it sets them (a seed
    replicate differs from its original in the seed alone)."""
    update = {k: getattr(variant, k) for k in ("arch", "seed") if getattr(variant, k) is not None}
    return p.model_copy(update=update) if update else p


@dataclass(frozen=True)
class Run:
    """A variant's run as setup settles it: its settings, processes and outputs."""

    name: str
    variant: VariantParams
    p: PretrainParams  # effective_params: the variant's own arch and seed
    rt: Runtime
    machine: machine_settings.Machine
    models_dir: Path
    results_dir: Path
    progress: bool
    monitor: KnnMonitor | None  # rank 0's

    @property
    def method(self) -> Method:
        return METHODS[self.variant.method]


@dataclass
class Trainer:
    """A trained variant's data, model and optimisation, and where its loop stands: what a
    checkpoint holds."""

    model: nn.Module  # DDP-wrapped once the loop starts under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    dataset: DecodedViews
    sampler: StreamSampler
    classes: list[str]
    files: list[str]  # the files whose bytes determine the data (build_data)
    queue: int  # MoCo's queue (0: none)
    local_batch: int  # this process's share of the global batch
    bf16: bool
    ends: list[int]  # the steps at which a logging period ends
    key: str = ""  # the resume key, and the checkpoint's path
    path: Path | None = None
    step: int = 0
    loss_sum: float = 0.0  # the running loss of the period under way
    loss_n: int = 0
    history: list[dict] = field(default_factory=list)  # the periods logged so far


@dataclass
class Loop:
    """What the loop steps with, set up once the state is resumed."""

    forward: Callable  # the model, compiled or not
    step: Callable  # _moco_step or _supervised_step
    augment: BatchMoCoV2
    sync_bn: Callable | None  # MoCo under DDP: averages the running BN statistics
    ceiling: float  # a loss no healthy run reaches
    live: Any  # rank 0's dvclive
    bar: tqdm
    trace: IO | None
    started: float = 0.0  # the period's clock and images, for the throughput line
    images: int = 0

    def close(self) -> None:
        self.bar.close()
        if self.trace is not None:
            self.trace.close()
        if self.live is not None:
            self.live.end()


def train(
    name: str,
    variant: VariantParams,
    p: PretrainParams,
    models_dir: str | Path,
    results_dir: str | Path,
    progress: bool = True,
    machine: machine_settings.Machine | None = None,
) -> dict:
    """Train (or resume) one variant; write models/VARIANT/backbone.pt and results/pretrain/VARIANT.
    `machine`: workers, resident memory, checkpoint frequency (None: machine.yaml's)."""
    # setup: processes and device, the variant's settings and seed, the kNN monitor
    run = _setup(name, variant, p, Path(models_dir), Path(results_dir), progress, machine)
    if not run.method.trains:  # nothing to train: the init, or a given checkpoint
        return _export_untrained(run)
    # build: data, model, optimizer and schedule (the seed draws the model's init)
    t = _build(run)
    # resume: where a killed run of the same settings, data and code stopped, if one did
    _resume(run, t)
    # run: the steps of every logging period not logged yet, each period's end recorded
    _run(run, t)
    # export: the backbone and summary.json, then the checkpoint goes
    return _export_trained(run, t)


def _setup(
    name: str,
    variant: VariantParams,
    p: PretrainParams,
    models_dir: Path,
    results_dir: Path,
    progress: bool,
    machine: machine_settings.Machine | None,
) -> Run:
    rt = setup_runtime()
    machine = machine or machine_settings.load()
    p = effective_params(variant, p)
    torch.manual_seed(p.seed)
    monitor = KnnMonitor(p.monitor, p.image_size, p.monitor_per_class, p.knn_k) if rt.main else None
    return Run(name, variant, p, rt, machine, models_dir, results_dir, progress, monitor)


def _export_untrained(run: Run) -> dict:
    """random or external: the backbone as built, its kNN monitor at step 0 logged like a trained
    variant's curves."""
    model = build_model(run, queue=0, classes=0, bn_splits=1).to(run.rt.device)
    floor = []
    if run.rt.main:
        floor = [{"step": 0, "knn_top1": run.monitor(backbone_of(model), run.rt.device)}]
        _write_live(run.results_dir, floor).end()
    return _export(run, model, floor, steps=0)


def _build(run: Run) -> Trainer:
    p, rt, name = run.p, run.rt, run.name
    # each process's share of the global batch and of its BN groups, before any data is read
    local_batch, local_splits = process_share(name, run.variant.method, p, rt.world)
    dataset, classes, files = build_data(run.variant, p, run.machine.resident_mb)
    if p.batch_size > len(dataset):
        raise PretrainError(
            f"pretrain@{name}: batch {p.batch_size} (pretrain.batch_size, the global batch) is larger "
            f"than the corpus {run.variant.data} ({len(dataset)} items)"
        )
    queue = _queue_size(p, len(dataset), p.batch_size, name) if run.method.queue else 0
    model = build_model(run, queue, len(classes), local_splits).to(rt.device)
    if rt.cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = _optimisation(model, p)
    return Trainer(
        model,
        optimizer,
        scheduler,
        dataset,
        StreamSampler(len(dataset), p.batch_size, rt, p.seed),
        classes,
        files,
        queue,
        local_batch,
        bf16=use_bf16(p.precision, rt),
        ends=[min(e, p.steps) for e in range(p.log_every, p.steps + p.log_every, p.log_every)],
    )


def _optimisation(model: nn.Module, p: PretrainParams):
    """SGD of the trainable parameters, lr scaled per 256 images; its warm-up and cosine schedule."""
    optimizer = torch.optim.SGD(
        [q for q in model.parameters() if q.requires_grad],
        lr=p.lr * p.batch_size / 256,
        momentum=p.sgd_momentum,
        weight_decay=p.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, p.warmup_steps, p.steps)
    )
    return optimizer, schedule


def _resume(run: Run, t: Trainer) -> None:
    """Every process takes rank 0's checkpoint of this key, if a killed run left one."""
    t.key = _resume_key(run, t)
    t.path = resume.checkpoint_path(run.name, t.key)
    state = _load_resumable(t.path, t.key, run.rt, run.name)
    if state is None:
        return
    t.model.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    t.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    t.step, t.loss_sum, t.loss_n = (
        int(state["step"]),
        float(state["loss_sum"]),
        int(state["loss_n"]),
    )
    t.history = json.loads(state["history"])
    if run.rt.main:
        print(
            f"pretrain@{run.name}: resuming at step {t.step} of {run.p.steps} from {t.path}",
            file=sys.stderr,
        )


def _resume_key(run: Run, t: Trainer) -> str:
    """The settings that shape the result (machine.yaml's do not), the bytes of what is read, bf16
    or not (a machine without native bf16 trains in fp32), hashed with the code (resume.py)."""
    settings = {
        "variant": run.variant.model_dump(exclude={"replicate_of"}),
        "pretrain": run.p.model_dump(),
        "world": run.rt.world,
        "queue": t.queue,
        "bf16": t.bf16,
    }
    digest = resume.node_data_digest(
        t.dataset.items,
        t.files + monitor_files(run.p),
        first=run.rt.local_rank == 0,
        barrier=dist.barrier if run.rt.world > 1 else None,
    )  # hashed once per node
    return _agreed_key(resume.resume_key(settings, digest), run.rt)


def _run(run: Run, t: Trainer) -> None:
    loop = _loop(run, t)
    while len(t.history) < len(t.ends):
        if t.step >= t.ends[len(t.history)]:  # a logging period ended and is not recorded yet
            _end_period(run, t, loop)
        else:
            _train_period(run, t, loop)
    loop.close()


def _loop(run: Run, t: Trainer) -> Loop:
    """DDP around the resumed model, the method's step and augmentation, the logs (dvclive replays
    the periods done so far)."""
    p, rt = run.p, run.rt
    if rt.world > 1:
        t.model = nn.parallel.DistributedDataParallel(
            t.model, device_ids=[rt.local_rank] if rt.cuda else None
        )
    return Loop(
        forward=compiled_or_eager(t.model, run.name) if (p.compile and rt.cuda) else t.model,
        step=STEPS[run.method.step],
        augment=for_method(run.variant.method, p.image_size, p.min_crop_scale),
        # under DDP: the running BN statistics of all the global batch's groups (moco.py)
        sync_bn=unwrap(t.model).average_bn_statistics
        if rt.world > 1 and run.method.split_bn
        else None,
        ceiling=loss_ceiling(run.variant.method, t.queue, p.temperature, len(t.classes)),
        live=_write_live(run.results_dir, t.history) if rt.main else None,
        bar=tqdm(
            total=p.steps,
            initial=t.step,
            desc=f"pretrain@{run.name}",
            unit="step",
            file=sys.stderr,
            disable=None if (run.progress and rt.main) else True,
        ),
        trace=_trace_file(rt),
        started=time.perf_counter(),
    )


def _end_period(run: Run, t: Trainer, loop: Loop) -> None:
    """The period's record; rank 0 adds the kNN monitor, checkpoints, logs it."""
    record = {
        "step": t.step,
        "loss": t.loss_sum / max(t.loss_n, 1),
        "lr": t.scheduler.get_last_lr()[0],
    }
    if run.rt.main:
        record["knn_top1"] = run.monitor(backbone_of(t.model), run.rt.device)
        crash_point("monitor", t.step)
    t.history.append(record)
    t.loss_sum, t.loss_n = 0.0, 0  # the next period's
    if run.rt.main:
        _save(run, t, "period_checkpoint")
        _log_period(loop.live, record)
        rate = (
            f"{loop.images / (time.perf_counter() - loop.started):.1f} images/s"
            if loop.images
            else "resumed here"
        )
        print(
            f"pretrain@{run.name}: step {t.step} of {run.p.steps}: loss {record['loss']:.4f}, "
            f"kNN top-1 {record['knn_top1']:.4f} ({rate})",
            file=sys.stderr,
        )
    loop.started, loop.images = time.perf_counter(), 0


def _train_period(run: Run, t: Trainer, loop: Loop) -> None:
    """The steps up to the current period's end."""
    t.sampler.set_range(t.step, t.ends[len(t.history)])
    loader = DataLoader(
        t.dataset,
        batch_size=t.local_batch,
        sampler=t.sampler,
        drop_last=True,
        collate_fn=functools.partial(collate_views, crop_boxes=loop.augment.crop_boxes),
        num_workers=0 if t.dataset.resident else run.machine.pretrain_workers,
        pin_memory=run.rt.cuda,
    )
    for batch in _batches(loader):
        _train_step(run, t, loop, batch)


def _train_step(run: Run, t: Trainer, loop: Loop, batch: dict) -> None:
    lr = t.scheduler.get_last_lr()[0]
    generator = torch.Generator().manual_seed(run.p.seed * 7919 + t.step)
    loss = loop.step(loop.forward, _views(run, loop, batch), run.rt, t.bf16, generator)
    value = _stop_if_diverged(run.name, loss, t.step + 1, run.p, run.rt, loop.ceiling)
    t.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if loop.sync_bn is not None:
        loop.sync_bn(run.rt.world)
    t.optimizer.step()
    t.scheduler.step()
    _trace_step(loop.trace, t, lr, value)
    t.step += 1
    t.loss_sum, t.loss_n = t.loss_sum + value, t.loss_n + 1  # value: the global batch's loss
    loop.images += run.p.batch_size
    loop.bar.update()
    rate = loop.images / (time.perf_counter() - loop.started)
    loop.bar.set_postfix(loss=f"{value:.3f}", img_s=f"{rate:.0f}")
    crash_point("step", t.step)
    if t.step % run.machine.checkpoint_every == 0:
        _save(run, t, "checkpoint")


def _views(run: Run, loop: Loop, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(query, key) views for a contrastive step, (view, label) for a classifying one: augmented in
    this process, on its device."""
    images = batch["images"].to(run.rt.device, non_blocking=True)
    out = [
        loop.augment(images, batch["sources"][v], batch["regions"][v], batch["uniforms"][v])
        for v in range(len(batch["sources"]))
    ]
    return (out[0], out[1]) if run.method.step == "contrastive" else (out[0], batch["labels"])


def _export_trained(run: Run, t: Trainer) -> dict:
    """The export, with what the equal step budget meant for this corpus, how many of its
    negatives show the query's own object (None: unknown) and the precision the numbers came
    from; the stage is then complete and its outputs hold everything the checkpoint did."""
    extra = {
        "batch": run.p.batch_size,
        "samples_seen": t.step * run.p.batch_size,
        "corpus_items": len(t.dataset),
        "passes": round(t.step * run.p.batch_size / len(t.dataset), 2),
        "same_source_negative_share": negative_share(run.variant, t.dataset),
        "precision": "bf16" if t.bf16 else "fp32",
    }
    result = _export(run, t.model, t.history, steps=t.step, extra=extra)
    if run.rt.main:
        t.path.unlink(missing_ok=True)
    return result


def _export(
    run: Run, model: nn.Module, history: list[dict], steps: int, extra: dict | None = None
) -> dict:
    """Rank 0 writes backbone.pt and summary.json; every process then leaves the process group."""
    result = {}
    if run.rt.main:
        bb = backbone_of(model)
        knn = history[-1]["knn_top1"] if history else run.monitor(bb, run.rt.device)
        state = plain_backbone_state(bb)
        write_torch(
            run.models_dir / "backbone.pt",
            require_finite(state, f"pretrain@{run.name}: backbone not exported"),
        )
        result = {
            "variant": run.name,
            "arch": run.p.arch,
            "steps": steps,
            "final_loss": history[-1].get("loss") if history else None,
            "knn_top1": round(knn, 4),
            "knn_chance": round(run.monitor.chance, 4),
            **(extra or {}),
        }
        write_json(run.results_dir / "summary.json", result)
    teardown(run.rt)
    return result


def compiled_or_eager(model: nn.Module, name: str):
    """torch.compile of the model, timed at its first call; if compiling fails (no compiler, a
    backend error), the run goes on eagerly with a warning instead of stopping. Compiling happens
    before the first step executes, so nothing was updated by the failed attempt."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import InductorError

    compiled = torch.compile(model)
    chosen = None  # compiled, or the eager model once compiling failed

    def forward(*args):
        nonlocal chosen
        if chosen is not None:
            return chosen(*args)
        started = time.perf_counter()
        try:
            out = compiled(*args)
        except (TorchDynamoException, InductorError, RuntimeError) as exc:
            chosen = model
            print(
                f"pretrain@{name}: torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "continuing without it",
                file=sys.stderr,
            )
            return model(*args)
        chosen = compiled
        print(
            f"pretrain@{name}: compiled the step in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        return out

    return forward


def monitor_files(p: PretrainParams) -> list[str]:
    """Every image the kNN monitor could read (its split under `pretrain.monitor`)."""
    root = Path(p.monitor)
    return [
        it.path_a
        for split in MONITOR_SPLITS
        if (root / split).is_dir()
        for it in image_items(root / split)[0]
    ]


def crash_point(where: str, step: int) -> None:
    """Fault injection for the kill-and-resume tests: with DEMYSTIFY_KILL_AT=WHERE:STEP the process
    sends itself a real SIGKILL there (WHERE: step, checkpoint, monitor, period_checkpoint). With
    DEMYSTIFY_KILL_ONCE=PATH too, only the first process to get there dies, creating PATH: the
    workers torchrun --max-restarts restarts (and the other ranks) go on."""
    if os.environ.get("DEMYSTIFY_KILL_AT") != f"{where}:{step}":
        return
    once = os.environ.get("DEMYSTIFY_KILL_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)


def _trace_file(rt: Runtime):
    """With DEMYSTIFY_TRACE=FOLDER, each process appends one JSON line per step to
    FOLDER/rankR.jsonl (step, its items, lr, the global loss, samples_seen): for the tests that
    compare a DDP run with one process. Not an output: nothing else reads it."""
    folder = os.environ.get("DEMYSTIFY_TRACE")
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return open(Path(folder) / f"rank{rt.rank}.jsonl", "a", buffering=1)  # noqa: SIM115 (closed after the loop)


def _trace_step(trace: IO | None, t: Trainer, lr: float, value: float) -> None:
    if trace is not None:
        record = {
            "step": t.step,
            "items": t.sampler.step_items(t.step),
            "lr": lr,
            "loss": value,
            "samples_seen": (t.step + 1) * t.sampler.batch,
        }
        trace.write(json.dumps(record) + "\n")


def _agreed_key(key: str, rt: Runtime) -> str:
    """Every process must have computed the same key: processes of several nodes read their own
    copies of the data, and a differing copy would train another model than rank 0 resumes."""
    if rt.world == 1:
        return key
    keys: list = [None] * rt.world
    dist.all_gather_object(keys, key)
    differing = [r for r, k in enumerate(keys) if k != keys[0]]
    if differing:
        raise PretrainError(
            f"processes {differing} see other training data or settings than rank 0 "
            f"(resume keys {sorted(set(keys))}); give every node the same data"
        )
    return key


def _load_resumable(path: Path, key: str, rt: Runtime, name: str) -> dict | None:
    """Rank 0 reads the checkpoint of this key (if any) and every process gets it by broadcast, so
    nodes without a shared file system resume from the same state."""
    state = (
        resume.load_or_set_aside(path, key, f"pretrain@{name}") if rt.main else None
    )  # damaged: set aside
    if rt.world > 1:
        box = [state]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
    return state


def _moco_step(model, batch, rt: Runtime, bf16: bool, generator: torch.Generator):
    im_q, im_k = (b.to(rt.device, non_blocking=True) for b in batch)
    if rt.cuda:
        im_q, im_k = (x.contiguous(memory_format=torch.channels_last) for x in (im_q, im_k))
    # the global batch's permutation (the same on every process), drawn here: the compiled step takes a tensor
    perm = shuffle_for(im_k.shape[0] * rt.world, generator, im_k.device)
    with torch.autocast(rt.device_type, dtype=torch.bfloat16, enabled=bf16):
        logits, labels = model(im_q, im_k, perm)
        return F.cross_entropy(logits.float(), labels)


def _supervised_step(model, batch, rt: Runtime, bf16: bool, generator: torch.Generator):
    x, y = batch[0].to(rt.device, non_blocking=True), batch[1].to(rt.device)
    if rt.cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(rt.device_type, dtype=torch.bfloat16, enabled=bf16):
        return F.cross_entropy(model(x).float(), y)


# a method's `step` (core/methods.py): the loss of one batch
STEPS = {"contrastive": _moco_step, "classify": _supervised_step}


def loss_ceiling(method: str, queue: int, temperature: float, classes: int) -> float:
    """A loss no healthy run reaches. MoCo's InfoNCE on unit vectors is at most ln(K + 1) + 2 / T
    (every logit lies in [-1/T, 1/T]), so a loss above it means the numerics broke. Cross-entropy
    has no bound; a run that starts near ln(C) and climbs a hundredfold past it has diverged
    (lr = 10000 reached 4e16 while staying finite)."""
    if METHODS[method].step == "contrastive":
        return math.log(queue + 1) + 2.1 / temperature  # 5 % of slack for bf16 rounding
    return 100 * math.log(max(classes, 2))


def _stop_if_diverged(
    name: str,
    loss: torch.Tensor,
    step: int,
    p: PretrainParams,
    rt: Runtime,
    ceiling: float = math.inf,
) -> float:
    """Stop at the first non-finite loss, or one above `ceiling` (every process, so none waits in a
    collective), before it reaches the weights: a diverged run must not export a backbone. Returns
    the global batch's loss (under DDP the mean of the processes' equal shares: what one process
    logs), from the same one collective."""
    value = loss.detach().to(torch.float32).reshape(1)
    healthy = (torch.isfinite(value) & (value <= ceiling)).to(torch.float32)
    if rt.world > 1:
        both = torch.cat([value, healthy])
        torch.distributed.all_reduce(both)  # sums: the losses, and how many processes are healthy
        value, healthy = both[:1] / rt.world, (both[1:] == rt.world).to(torch.float32)
    if healthy.item() < 1:
        what = (
            "not finite"
            if not math.isfinite(float(value))
            else f"above {ceiling:.4g}, which no healthy run reaches"
        )
        raise PretrainError(
            f"pretrain@{name}: the loss is {float(value):.4g} at step {step} ({what}): training "
            f"diverged (likely cause: pretrain.lr = {p.lr} too high for batch {p.batch_size}, or bad "
            "input images); nothing was exported"
        )
    return float(value)


def _save(run: Run, t: Trainer, at: str) -> None:
    """Rank 0 writes the resumable state atomically (`at` names the crash point before it is in
    place, for the kill tests)."""
    if not run.rt.main:
        return
    ckpt.save(
        t.path,
        {
            "model": unwrap(t.model).state_dict(),
            "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict(),
            "step": t.step,
            "loss_sum": t.loss_sum,
            "loss_n": t.loss_n,
            "history": json.dumps(t.history),
            "rng": ckpt.rng_state(),
            "fingerprint": t.key,
        },
        before_commit=functools.partial(crash_point, at, t.step),
    )


def _write_live(results_dir: Path, history: list[dict]):
    """A fresh dvclive folder holding the periods of `history`: a resumed run rewrites what the killed
    one logged, so the folder is the same bytes as an uninterrupted run's. Only values that the seed
    determines are logged (throughput goes to the log, not to an output)."""
    from dvclive import Live

    live = Live(dir=str(results_dir), dvcyaml=False, save_dvc_exp=False, resume=False, report=None)
    for record in history:
        _log_period(live, record)
    return live


def _log_period(live, record: dict) -> None:
    """One logging period at dvclive's step = the optimizer step it ended at (the x of every curve,
    as in the overlays of summarize_training), not the period's index."""
    live.step = record["step"]
    for key, value in record.items():
        if key != "step":
            live.log_metric(
                f"train/{key}" if key != "knn_top1" else "monitor/knn_top1", value, timestamp=False
            )
    live.next_step()


def run_stage(
    *,
    name: str,
    variant: VariantParams,
    params: PretrainParams,
    gate: str | Path,
    models_dir: str | Path,
    results_dir: str | Path,
) -> dict:
    """The `pretrain@VARIANT` stage: refuse data that failed a required check, then train (or resume)."""
    require_passed(gate)
    return train(name, variant, params, models_dir, results_dir)
