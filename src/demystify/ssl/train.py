"""The `pretrain@VARIANT` training loop: one command on CPU, one GPU, or many through torchrun.

- Device: CUDA when present (bf16 autocast, channels_last, optional torch.compile), else CPU.
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
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from demystify import machine as machine_settings
from demystify.backbone import backbone, backbone_from, plain_backbone_state, require_finite
from demystify.core import frames_store
from demystify.core.config import PretrainParams, VariantParams
from demystify.core.gate import require_passed
from demystify.core.images import image_size
from demystify.core.io import write_json, write_torch
from demystify.ssl import checkpoint as ckpt
from demystify.ssl import resume
from demystify.ssl.batch_augment import for_method
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
from demystify.ssl.moco import MoCo, shuffle_for


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


TIMEOUT_ENV = "DEMYSTIFY_DIST_TIMEOUT_MIN"


def dist_timeout() -> timedelta:
    """How long a process waits in a collective: 60 minutes unless DEMYSTIFY_DIST_TIMEOUT_MIN says
    otherwise. Rank 0 may hash a whole corpus while the others wait (NCCL's default is 10 minutes)."""
    raw = os.environ.get(TIMEOUT_ENV) or "60"
    try:
        minutes = float(raw)
    except ValueError:
        minutes = math.nan
    if not (math.isfinite(minutes) and minutes > 0):
        raise PretrainError(f"{TIMEOUT_ENV}={raw!r}: not a positive number of minutes")
    return timedelta(minutes=minutes)


def _attempt_store(rank: int, world: int, timeout: timedelta) -> dict:
    """Under torchrun --max-restarts the workers of a restart meet in the same agent store as the
    killed ones did, and gloo read the dead processes' addresses left there ("connectFullMesh
    failed ... Connection refused", measured): each attempt gets keys of its own. Elsewhere
    (no agent store, or the first attempt) torch's env:// rendezvous as usual."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or attempt == "0":
        return {}
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world,
        is_master=False,
        timeout=timeout,
    )
    return {
        "store": dist.PrefixStore(f"demystify/attempt_{attempt}", store),
        "rank": rank,
        "world_size": world,
    }


def setup_runtime() -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if world > 1 and not dist.is_initialized():
        backend, timeout = "nccl" if device.startswith("cuda") else "gloo", dist_timeout()
        dist.init_process_group(backend, timeout=timeout, **_attempt_store(rank, world, timeout))
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    return Runtime(rank, world, local, device)


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
    if variant.method != "moco":
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
    if method != "moco" or world == 1:  # supervised: plain BN of each process's own batch
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


def _model(
    variant: VariantParams, p: PretrainParams, queue: int, classes: int, bn_splits: int
) -> nn.Module:
    if variant.method == "moco":  # bn_splits: this process's groups
        return MoCo(
            p.arch,
            p.dim,
            queue,
            p.moco_momentum,
            p.temperature,
            bn_splits,
            p.mlp,
            p.head_bn,
            p.width,
        )
    return backbone(
        p.arch, num_classes=classes if variant.method == "supervised" else None, width=p.width
    )


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


def effective_params(variant: VariantParams, p: PretrainParams) -> PretrainParams:
    """pretrain as this variant trains with it: its own arch and seed where it sets them (a seed
    replicate differs from its original in the seed alone)."""
    update = {k: getattr(variant, k) for k in ("arch", "seed") if getattr(variant, k) is not None}
    return p.model_copy(update=update) if update else p


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
    rt = setup_runtime()
    machine = machine or machine_settings.load()
    models_dir, results_dir = Path(models_dir), Path(results_dir)
    p = effective_params(variant, p)
    torch.manual_seed(p.seed)
    monitor = KnnMonitor(p.monitor, p.image_size, p.monitor_per_class, p.knn_k) if rt.main else None

    if variant.method in (
        "random",
        "external",
    ):  # nothing to train: the init, or a given checkpoint
        # the external checkpoint at the width it was trained at; the init at pretrain.width
        model = (
            backbone_from(variant.data, p.arch)
            if variant.method == "external"
            else backbone(p.arch, width=p.width)
        )
        model = model.to(rt.device)
        floor = (
            [{"step": 0, "knn_top1": monitor(_backbone_of(model), rt.device)}] if rt.main else []
        )
        if rt.main:  # its kNN monitor at step 0, logged like a trained variant's curves
            _write_live(results_dir, floor).end()
        return _finish(name, model, p, rt, models_dir, results_dir, monitor, floor, steps=0)

    local_batch, local_splits = process_share(
        name, variant.method, p, rt.world
    )  # before any data is read
    dataset, classes, files = build_data(variant, p, machine.resident_mb)
    global_batch = p.batch_size
    if global_batch > len(dataset):
        raise PretrainError(
            f"pretrain@{name}: batch {global_batch} (pretrain.batch_size, the global batch) is larger "
            f"than the corpus {variant.data} ({len(dataset)} items)"
        )
    queue = _queue_size(p, len(dataset), global_batch, name) if variant.method == "moco" else 0
    model = _model(variant, p, queue, len(classes), local_splits).to(rt.device)
    cuda = rt.cuda
    bf16 = use_bf16(p.precision, rt)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    trainable = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.SGD(
        trainable,
        lr=p.lr * global_batch / 256,
        momentum=p.sgd_momentum,
        weight_decay=p.weight_decay,
    )
    sampler = StreamSampler(len(dataset), global_batch, rt, p.seed)
    total = p.steps
    ends = [
        min(e, total) for e in range(p.log_every, total + p.log_every, p.log_every)
    ]  # steps that log
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, p.warmup_steps, total)
    )

    # the resume key: settings that shape the result (machine.yaml's do not), the bytes of what is
    # read, bf16 or not (a machine without native bf16 trains in fp32)
    settings = {
        "variant": variant.model_dump(exclude={"replicate_of"}),
        "pretrain": p.model_dump(),
        "world": rt.world,
        "queue": queue,
        "bf16": bf16,
    }
    digest = resume.node_data_digest(
        dataset.items,
        files + monitor_files(p),
        first=rt.local_rank == 0,
        barrier=dist.barrier if rt.world > 1 else None,
    )  # hashed once per node
    key = _agreed_key(resume.resume_key(settings, digest), rt)
    path = resume.checkpoint_path(name, key)
    step, loss_sum, loss_n, history = 0, 0.0, 0, []
    state = _load_resumable(path, key, rt, name)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step, loss_sum, loss_n = int(state["step"]), float(state["loss_sum"]), int(state["loss_n"])
        history = json.loads(state["history"])
        if rt.main:
            print(
                f"pretrain@{name}: resuming at step {step} of {total} from {path}", file=sys.stderr
            )
    del state

    if rt.world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.local_rank] if cuda else None
        )
    step_fn = _moco_step if variant.method == "moco" else _supervised_step
    # MoCo under DDP: the running BN statistics of all the global batch's groups (moco.py)
    sync_bn = (
        model.module.average_bn_statistics if rt.world > 1 and variant.method == "moco" else None
    )
    ceiling = loss_ceiling(variant.method, queue, p.temperature, len(classes))
    augment = for_method(variant.method, p.image_size, p.min_crop_scale)

    def views(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(query, key) views for MoCo, (view, label) for supervised: augmented in this process, on its device."""
        images = batch["images"].to(rt.device, non_blocking=True)
        out = [
            augment(images, batch["sources"][v], batch["regions"][v], batch["uniforms"][v])
            for v in range(len(batch["sources"]))
        ]
        return (out[0], out[1]) if variant.method == "moco" else (out[0], batch["labels"])

    forward = compiled_or_eager(model, name) if (p.compile and cuda) else model
    live = (
        _write_live(results_dir, history) if rt.main else None
    )  # the periods done so far, replayed

    def save(loss_sum: float, loss_n: int, at: str) -> None:
        if rt.main:
            _save(
                path,
                model,
                optimizer,
                scheduler,
                step,
                loss_sum,
                loss_n,
                history,
                key,
                crash=lambda: crash_point(at, step),
            )

    bar = tqdm(
        total=total,
        initial=step,
        desc=f"pretrain@{name}",
        unit="step",
        file=sys.stderr,
        disable=None if (progress and rt.main) else True,
    )
    trace = _trace_file(rt)
    started, images = time.perf_counter(), 0
    while len(history) < len(ends):
        if step >= ends[len(history)]:  # a logging period ended and is not recorded yet
            record = {
                "step": step,
                "loss": loss_sum / max(loss_n, 1),
                "lr": scheduler.get_last_lr()[0],
            }
            if rt.main:
                record["knn_top1"] = monitor(_backbone_of(model), rt.device)
                crash_point("monitor", step)
                history.append(record)
                save(0.0, 0, "period_checkpoint")
                _log_period(live, record)
                rate = (
                    f"{images / (time.perf_counter() - started):.1f} images/s"
                    if images
                    else "resumed here"
                )
                print(
                    f"pretrain@{name}: step {step} of {total}: loss {record['loss']:.4f}, "
                    f"kNN top-1 {record['knn_top1']:.4f} ({rate})",
                    file=sys.stderr,
                )
            else:
                history.append(record)
            loss_sum, loss_n, started, images = 0.0, 0, time.perf_counter(), 0
            continue
        sampler.set_range(step, ends[len(history)])
        loader = DataLoader(
            dataset,
            batch_size=local_batch,
            sampler=sampler,
            drop_last=True,
            collate_fn=functools.partial(collate_views, crop_boxes=augment.crop_boxes),
            num_workers=0 if dataset.resident else machine.pretrain_workers,
            pin_memory=cuda,
        )
        for batch in _batches(loader):
            lr = scheduler.get_last_lr()[0]
            loss = step_fn(
                forward, views(batch), rt, bf16, torch.Generator().manual_seed(p.seed * 7919 + step)
            )
            value = _stop_if_diverged(
                name, loss, step + 1, p, rt, ceiling
            )  # the global batch's loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if sync_bn is not None:
                sync_bn(rt.world)
            optimizer.step()
            scheduler.step()
            if trace is not None:
                trace.write(
                    json.dumps(
                        {
                            "step": step,
                            "items": sampler.step_items(step),
                            "lr": lr,
                            "loss": value,
                            "samples_seen": (step + 1) * global_batch,
                        }
                    )
                    + "\n"
                )
            step += 1
            loss_sum, loss_n = loss_sum + value, loss_n + 1
            images += global_batch
            bar.update()
            bar.set_postfix(
                loss=f"{value:.3f}", img_s=f"{images / (time.perf_counter() - started):.0f}"
            )
            crash_point("step", step)
            if step % machine.checkpoint_every == 0:
                save(loss_sum, loss_n, "checkpoint")
    bar.close()
    if trace is not None:
        trace.close()
    if live is not None:
        live.end()
    result = _finish(
        name,
        model,
        p,
        rt,
        models_dir,
        results_dir,
        monitor,
        history,
        steps=step,
        precision="bf16" if bf16 else "fp32",
        budget={
            "batch": global_batch,
            "samples_seen": step * global_batch,
            "corpus_items": len(dataset),
            "passes": round(step * global_batch / len(dataset), 2),
        },
        same_source=negative_share(variant, dataset),
    )
    if rt.main:  # the stage is complete: its outputs hold everything the checkpoint did
        path.unlink(missing_ok=True)
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


def loss_ceiling(method: str, queue: int, temperature: float, classes: int) -> float:
    """A loss no healthy run reaches. MoCo's InfoNCE on unit vectors is at most ln(K + 1) + 2 / T
    (every logit lies in [-1/T, 1/T]), so a loss above it means the numerics broke. Cross-entropy
    has no bound; a run that starts near ln(C) and climbs a hundredfold past it has diverged
    (lr = 10000 reached 4e16 while staying finite)."""
    if method == "moco":
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


def _save(
    path: Path,
    model,
    optimizer,
    scheduler,
    step: int,
    loss_sum: float,
    loss_n: int,
    history: list[dict],
    fingerprint: str,
    crash=None,
) -> None:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    ckpt.save(
        path,
        {
            "model": inner.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "loss_sum": loss_sum,
            "loss_n": loss_n,
            "history": json.dumps(history),
            "rng": ckpt.rng_state(),
            "fingerprint": fingerprint,
        },
        before_commit=crash,
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


def _finish(
    name: str,
    model,
    p: PretrainParams,
    rt: Runtime,
    models_dir: Path,
    results_dir: Path,
    monitor,
    history: list[dict],
    steps: int,
    precision: str | None = None,
    budget: dict | None = None,
    same_source: float | None = None,
) -> dict:
    result = {}
    if rt.main:
        bb = _backbone_of(model)
        knn = history[-1]["knn_top1"] if history else monitor(bb, rt.device)
        write_torch(
            models_dir / "backbone.pt",
            require_finite(plain_backbone_state(bb), f"pretrain@{name}: backbone not exported"),
        )
        result = {
            "variant": name,
            "arch": p.arch,
            "steps": steps,
            "final_loss": history[-1].get("loss") if history else None,
            "knn_top1": round(knn, 4),
            "knn_chance": round(monitor.chance, 4),
        }
        result.update(budget or {})  # what the equal step budget meant for this corpus
        if (
            budget is not None
        ):  # trained: how many of its negatives show the query's own object (None: unknown)
            result["same_source_negative_share"] = same_source
        if (
            precision
        ):  # bf16 where the processor has it natively (`auto`): say which the numbers came from
            result["precision"] = precision
        write_json(results_dir / "summary.json", result)
    if rt.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


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
