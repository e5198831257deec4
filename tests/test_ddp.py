"""DDP is the recipe: 2 processes (gloo, CPU) at global batch B compute what 1 process computes at
B. Here the MoCo module itself, in float64 so that equal math shows as equal numbers; the whole
stage under torchrun is in test_pretrain.py (it reuses that module's one-process run)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from demystify.core.config import PretrainParams
from demystify.ssl.moco import MoCo, encoder, shuffle_for
from demystify.ssl.runtime import PretrainError, Runtime
from demystify.ssl.train import StreamSampler, process_share

B, SPLITS, STEPS = 16, 4, 2  # global batch, BN groups of it (4 samples each), SGD steps


def _model(splits: int) -> MoCo:
    torch.manual_seed(0)
    return MoCo(
        encoder("resnet18", 16, splits), queue_size=32, momentum=0.9, bn_splits=splits
    ).double()


def _views(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return tuple(torch.randn(B, 3, 32, 32, generator=g, dtype=torch.float64) for _ in range(2))


def _train(model: MoCo, rank: int, world: int) -> dict:
    """STEPS SGD steps on this process's share (global positions rank, rank + world, ...), as
    train.py does: DDP under several processes, BN statistics averaged after the backward."""
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    encoded = []  # what this process's key encoder was given
    model.encoder_k.register_forward_pre_hook(lambda _, args: encoded.append(args[0].clone()))
    out = {"logits": [], "loss": [], "grad": []}
    for step in range(STEPS):
        im_q, im_k = (x[rank::world].contiguous() for x in _views(step))
        perm = shuffle_for(B, torch.Generator().manual_seed(100 + step), "cpu")
        logits, labels = net(im_q, im_k, perm)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        if world > 1:
            model.average_bn_statistics(world)
        out["grad"].append(model.encoder_q[0].conv1.weight.grad.clone())
        opt.step()
        out["logits"].append(logits.detach())
        out["loss"].append(loss.item())
    out["state"] = model.state_dict()
    out["encoded"] = encoded
    return out


def _worker(rank: int, store: str, results: str) -> None:
    torch.set_num_threads(1)  # two processes on a shared CPU: OpenMP's spinning threads would fight
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.save(_train(_model(SPLITS // 2), rank, 2), f"{results}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_and_one(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(tmp / "store"), str(tmp / "result")), nprocs=2)
    return [torch.load(tmp / f"result.{r}") for r in (0, 1)], _train(_model(SPLITS), 0, 1)


def test_two_processes_compute_what_one_does(two_and_one):
    """Logits, the global loss, gradients after DDP's average, and after 2 steps every parameter
    and buffer (running BN statistics of both encoders, the queue and its pointer): measured
    differences 1e-11 or less in float64 (rounding order), asserted within 1e-8."""
    two, one = two_and_one
    for step in range(STEPS):
        for rank in (0, 1):
            torch.testing.assert_close(
                two[rank]["logits"][step], one["logits"][step][rank::2], atol=1e-8, rtol=1e-8
            )
            torch.testing.assert_close(
                two[rank]["grad"][step], one["grad"][step], atol=1e-8, rtol=1e-8
            )
        global_loss = (two[0]["loss"][step] + two[1]["loss"][step]) / 2
        assert global_loss == pytest.approx(one["loss"][step], rel=1e-10)
    assert one["state"].keys() == two[0]["state"].keys()
    for key, value in one["state"].items():
        for rank in (0, 1):
            torch.testing.assert_close(
                two[rank]["state"][key], value, atol=1e-8, rtol=1e-8, msg=key
            )
    assert int(one["state"]["queue_ptr"]) == (STEPS * B) % 32  # all the global batch's keys, once


def test_keys_are_encoded_across_processes(two_and_one):
    """The official shuffle-BN across processes ran: each process's key encoder was given keys of
    queries held by the other process (a local shuffle never does), B / 2 keys a step."""
    two, _ = two_and_one
    for step in range(STEPS):
        im_k = _views(step)[1]
        for rank in (0, 1):
            given = two[rank]["encoded"][step]
            assert given.shape[0] == B // 2
            owners = {next(p for p in range(B) if torch.equal(im_k[p], row)) % 2 for row in given}
            assert owners == {0, 1}, (step, rank)  # its own queries' keys and the other process's


def test_the_sampler_interleaves_the_global_batch():
    """Process r of W takes positions r, r + W, ... of each global batch: together the processes
    draw exactly the one-process stream, step by step."""

    def drawn(rank: int, world: int) -> list:
        s = StreamSampler(10, 4, Runtime(rank=rank, world=world), seed=3)
        s.set_range(0, 9)
        return list(s)

    one, two = drawn(0, 1), [drawn(r, 2) for r in (0, 1)]
    assert len(one) == 36 and [len(x) for x in two] == [18, 18]
    assert two == [one[0::2], one[1::2]]
    s = StreamSampler(10, 4, Runtime(rank=1, world=2), seed=3)
    assert s.step_items(5) == one[5 * 4 + 1 : 6 * 4 : 2]


def _pretrain(**change) -> PretrainParams:
    values = dict(
        arch="resnet18",
        width=1.0,
        image_size=32,
        steps=8,
        warmup_steps=1,
        log_every=4,
        batch_size=8,
        lr=0.03,
        weight_decay=1e-4,
        sgd_momentum=0.9,
        moco_momentum=0.99,
        temperature=0.2,
        queue_size=16,
        dim=16,
        mlp=True,
        head_bn=False,
        bn_splits=2,
        min_crop_scale=0.2,
        monitor="m",
        monitor_per_class=2,
        knn_k=3,
        frames_root="f",
        compile=False,
        precision="fp32",
        seed=0,
    )
    return PretrainParams(**(values | change))


@pytest.mark.parametrize(
    ("method", "change", "world", "expected"),
    [
        (
            "moco",
            {"bn_splits": 1},
            2,
            "pretrain.bn_splits 1 (BN groups of the global batch) is not a multiple of the 2 "
            "processes (remainder 1): a key would share BN statistics with its own query",
        ),
        (
            "moco",
            {"bn_splits": 4},
            8,
            "pretrain.bn_splits 4 (BN groups of the global batch) is not a multiple of the 8",
        ),
        (
            "moco",
            {"batch_size": 6, "bn_splits": 3},
            4,
            "pretrain.batch_size 6 (the global batch) does not divide among "
            "4 processes (remainder 2)",
        ),
        (
            "supervised",
            {"batch_size": 9, "bn_splits": 1},
            2,
            "pretrain.batch_size 9 (the global batch) does not divide "
            "among 2 processes (remainder 1)",
        ),
    ],
)
def test_a_leaking_or_uneven_share_is_refused_by_name(method, change, world, expected):
    with pytest.raises(PretrainError, match="^pretrain@v: ") as err:
        process_share("v", method, _pretrain(**change), world)
    assert expected in str(err.value)


def test_each_process_takes_its_share():
    """What is refused above aside, the shares: the batch split evenly, MoCo's BN groups too
    (s / W each); supervised keeps plain per-process BN; one process is unchanged."""
    assert process_share("v", "moco", _pretrain(batch_size=256, bn_splits=8), 8) == (32, 1)
    assert process_share("v", "moco", _pretrain(batch_size=256, bn_splits=8), 4) == (64, 2)
    assert process_share("v", "moco", _pretrain(batch_size=8, bn_splits=1), 1) == (8, 1)
    assert process_share("v", "supervised", _pretrain(batch_size=8, bn_splits=1), 2) == (4, 1)
