"""Where and how the pretrain stage runs: the processes (one, or DDP under torchrun), this
process's device, and the precision it trains at.

- Device: CUDA when present (`cuda:LOCAL_RANK`), else CPU.
- Processes: under `torchrun` (WORLD_SIZE > 1) a process group, NCCL on GPUs and gloo on CPUs,
  whose collectives wait DEMYSTIFY_DIST_TIMEOUT_MIN minutes (60 by default); `teardown` ends it.
- Precision (`pretrain.precision`): `auto` is bf16 autocast on CUDA and on CPUs with native bf16,
  fp32 elsewhere.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist


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
    """This process's rank and device (torchrun's environment), the process group joined."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if world > 1 and not dist.is_initialized():
        backend, timeout = "nccl" if device.startswith("cuda") else "gloo", dist_timeout()
        dist.init_process_group(backend, timeout=timeout, **_attempt_store(rank, world, timeout))
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    return Runtime(rank, world, local, device)


def teardown(rt: Runtime) -> None:
    """Every process waits for rank 0's outputs, then the process group ends."""
    if rt.world > 1:
        dist.barrier()
        dist.destroy_process_group()
