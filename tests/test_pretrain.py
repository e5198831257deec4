"""Pretraining: MoCo parts, export, resume after a real kill, DDP on CPU (gloo), bad inputs."""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
import yaml
from dvc_cmd import stage_argv

from demystify import backbone as bb
from demystify.backbone import backbone, plain_backbone_state
from demystify.core import config, gate
from demystify.ssl import checkpoint as ckpt
from demystify.ssl.datasets import DataError, pair_items
from demystify.ssl.moco import MoCo, SplitBatchNorm, encoder, shuffle_for
from demystify.tools.params_file import compose
from demystify.world.synthesize import World, write_classification, write_object_centric

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder laid out like the repository: params.yaml (smoke) and the data pretraining reads."""
    root = tmp_path_factory.mktemp("pretrain")
    compose(
        root / "params.yaml",
        [
            "scale=smoke",
            "pretrain.steps=8",
            "pretrain.log_every=4",
            "pretrain.warmup_steps=2",
            "world.corpora.object_centric_per_category=3",
        ],
        config_dir=ROOT / "conf",
    )
    world = World(config.load("world", path=root / "params.yaml")["world"])
    write_object_centric(world, root / "data" / "world", progress=False)
    write_classification(world, root / "data" / "world", progress=False)
    gate.write(root / GATE, [])  # as check_data writes it when the checks pass
    # a checkpoint every step (the smoke scale's setting before machine settings left params): the
    # kill tests find the step they killed at
    (root / "machine.yaml").write_text("pretrain: {checkpoint_every: 1}\n")
    return root


GATE = Path("results/checks/gate.json")


def _stage(
    root: Path, *args: str, torchrun: int = 0, restarts: int = 0, env: dict | None = None, **popen
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **(env or {})}
    (variant,) = args
    cmd = stage_argv("pretrain", root / "params.yaml", variant)  # as dvc.yaml runs it
    if torchrun:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={torchrun}",
            f"--max-restarts={restarts}",
            *cmd[1:],
        ]
    return subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def _run(
    root: Path, *args: str, torchrun: int = 0, restarts: int = 0, env: dict | None = None
) -> subprocess.CompletedProcess:
    proc = _stage(root, *args, torchrun=torchrun, restarts=restarts, env=env)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _copy_workspace(src: Path, dst: Path, copy_data: bool = False) -> Path:
    dst.mkdir()
    (dst / "params.yaml").write_text((src / "params.yaml").read_text())
    if (src / "machine.yaml").is_file():
        (dst / "machine.yaml").write_text((src / "machine.yaml").read_text())
    if copy_data:
        shutil.copytree(src / "data", dst / "data")
    else:
        (dst / "data").symlink_to(src / "data")
    (dst / GATE).parent.mkdir(parents=True)
    shutil.copy(src / GATE, dst / GATE)
    return dst


def _workspace_with(workspace: Path, dst: Path, **pretrain) -> Path:
    """A copy of the workspace whose params.yaml sets these `pretrain` keys."""
    root = _copy_workspace(workspace, dst)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["pretrain"].update(pretrain)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _checkpoints(root: Path, variant: str) -> list[Path]:
    return sorted((root / ".checkpoints" / "pretrain" / variant).glob("*.pt"))


def _outputs(root: Path, variant: str) -> dict[str, bytes]:
    """Every file of the stage's outputs, by path: what DVC hashes."""
    files = [
        *(root / "models" / variant).rglob("*"),
        *(root / "results" / "pretrain" / variant).rglob("*"),
    ]
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(files) if f.is_file()}


# --- the parts ---------------------------------------------------------------------------------


def test_split_bn_normalises_each_group_on_its_own():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 3, 3) * torch.arange(1, 9).view(8, 1, 1, 1)
    split, plain = SplitBatchNorm(4, 2), torch.nn.BatchNorm2d(4)
    out = split(x)
    for group in range(2):  # sample n belongs to group n % splits
        torch.testing.assert_close(
            out[group::2], torch.nn.functional.batch_norm(x[group::2], None, None, training=True)
        )
    split.eval()
    plain.load_state_dict(split.state_dict())
    plain.eval()
    torch.testing.assert_close(split(x), plain(x))  # eval: an ordinary BatchNorm


def test_split_bn_keeps_channels_last_and_equals_the_fused_path():
    """The channels_last path (per-group statistics on a 5-D view, the GPU's layout) gives the NCHW
    fused path's outputs, running statistics and gradients, and never makes an NCHW copy."""
    torch.manual_seed(0)
    x = (torch.randn(8, 4, 5, 6) * torch.arange(1, 9).view(8, 1, 1, 1) + 3).contiguous(
        memory_format=torch.channels_last
    )
    fused = SplitBatchNorm(4, 2)
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5)
        fused.bias.uniform_(-1, 1)
    grouped = copy.deepcopy(fused)
    xa, xb = x.contiguous().requires_grad_(), x.clone().requires_grad_()
    out_a, out_b = fused(xa), grouped(xb)
    assert out_b.is_contiguous(memory_format=torch.channels_last) and not out_b.is_contiguous()
    torch.testing.assert_close(out_b, out_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grouped.running_mean, fused.running_mean)
    torch.testing.assert_close(grouped.running_var, fused.running_var)
    weights = torch.randn_like(out_a)
    (out_a * weights).sum().backward()
    (out_b * weights).sum().backward()
    for a, b in (
        (xa.grad, xb.grad),
        (fused.weight.grad, grouped.weight.grad),
        (fused.bias.grad, grouped.bias.grad),
    ):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    low = copy.deepcopy(fused)(
        x.to(torch.bfloat16)
    )  # bf16 activations: equal within bf16's precision
    assert low.dtype == torch.bfloat16 and low.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(low.float(), out_a.detach(), atol=0.05, rtol=0.02)


def test_the_moco_step_traces_without_graph_breaks():
    """torch.compile sees the whole forward (queue pointer as tensor arithmetic, the shuffle drawn
    outside): one graph, in the GPU's channels_last layout, checked here on the CPU."""
    torch.manual_seed(0)
    model = MoCo(encoder("resnet18", 16, 2), queue_size=16, momentum=0.9, bn_splits=2).to(
        memory_format=torch.channels_last
    )
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    explanation = torch._dynamo.explain(model)(
        x, x.flip(-1), shuffle_for(8, torch.Generator().manual_seed(0), "cpu")
    )
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_moco_queue_is_a_buffer_that_advances():
    torch.manual_seed(0)
    model = MoCo(encoder("resnet18", 16, 2), queue_size=12, momentum=0.9, bn_splits=2)
    assert "queue" in model.state_dict() and "queue_ptr" in model.state_dict()
    x = torch.randn(4, 3, 32, 32)
    logits, labels = model(x, x.flip(-1), torch.Generator().manual_seed(0))
    assert logits.shape == (4, 13) and (labels == 0).all()
    assert int(model.queue_ptr) == 4
    for _ in range(2):
        model(x, x)
    assert int(model.queue_ptr) == 0  # wrapped around
    with torch.no_grad():  # as if the query encoder had taken an optimizer step
        for p in model.encoder_q.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.encoder_k.parameters()]
    model(x, x)
    for old, new, q in zip(
        before, model.encoder_k.parameters(), model.encoder_q.parameters(), strict=True
    ):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * q)  # k <- m k + (1 - m) q


def test_export_is_a_plain_torchvision_state_dict():
    moco = MoCo(encoder("resnet18", 16, 2), queue_size=8, bn_splits=2)
    state = plain_backbone_state(moco.backbone_q)
    assert not any(k.startswith(("module.", "encoder_q.", "fc.")) for k in state)
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Identity()
    net.load_state_dict(state, strict=True)
    supervised = backbone("resnet18", num_classes=5)
    net.load_state_dict(plain_backbone_state(supervised), strict=True)


def test_checkpoint_loading_is_safe_and_strict(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("arbitrary code ran",))

    evil = tmp_path / "checkpoint.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"model": Payload()}, fh)
    with pytest.raises(bb.CheckpointError, match="not a loadable checkpoint"):
        ckpt.load(evil)
    with pytest.raises(bb.CheckpointError, match="checkpoint not found"):
        ckpt.load(tmp_path / "absent.pt")
    good = tmp_path / "good.pt"
    ckpt.save(good, {"step": 3, "fingerprint": "abc"})
    with pytest.raises(bb.CheckpointError, match="written with other settings"):
        ckpt.load(good, "def")
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Identity()
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "backbone.pt")
    with pytest.raises(bb.CheckpointError, match="does not fit the model"):
        bb.load_backbone(tmp_path / "backbone.pt", net)
    with pytest.raises(bb.CheckpointError, match="backbone not found"):
        bb.load_backbone(tmp_path / "none.pt", net)


# --- bad input ---------------------------------------------------------------------------------


def test_pairs_pointing_at_missing_frames(tmp_path):
    pd.DataFrame(
        {
            "path_a": ["v/000000.jpg"],
            "path_b": ["v/000002.jpg"],
            "a_x": [0.0],
            "a_y": [0.0],
            "a_w": [4.0],
            "a_h": [4.0],
            "b_x": [0.0],
            "b_y": [0.0],
            "b_w": [4.0],
            "b_h": [4.0],
        }
    ).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"2 frame\(s\) it points at are missing .* v/000000.jpg"):
        pair_items(tmp_path / "p.parquet", tmp_path, crops=True)


def _tiny_pairs(root: Path, images: list[Path], videos: dict[str, int]) -> pd.DataFrame:
    """A pairs manifest over `images` (32 px at the smoke scale) copied in as frames
    (frames/<video>/NNNNNN.png): `videos[v]` pairs from video v, box a and box b at different
    places of two different frames."""
    rows, k = [], 0
    for video, count in videos.items():
        for j in range(count):
            for frame in (2 * j, 2 * j + 1):
                (root / "frames" / video).mkdir(parents=True, exist_ok=True)
                shutil.copy(images[k % len(images)], root / "frames" / video / f"{frame:06d}.png")
                k += 1
            rows.append(
                {
                    "video": video,
                    "path_a": f"{video}/{2 * j:06d}.png",
                    "path_b": f"{video}/{2 * j + 1:06d}.png",
                    "a_x": 2.0,
                    "a_y": 3.0,
                    "a_w": 20.0,
                    "a_h": 18.0,
                    "b_x": 8.0,
                    "b_y": 1.0,
                    "b_w": 16.0,
                    "b_h": 24.0,
                }
            )
    pairs = pd.DataFrame(rows)
    pairs.to_parquet(root / "pairs.parquet")
    return pairs


def test_crops_positives_cut_both_views_from_box_a_of_frame_a(workspace, tmp_path):
    """positives `crops`: one item per pair, like the tracker's, but both views are drawn from frame
    a's box; the tracker's second view is frame b's box."""
    from demystify.ssl.batch_augment import BatchMoCoV2
    from demystify.ssl.datasets import DecodedViews, collate_views

    images = sorted((workspace / "data/world/corpora/object_centric").rglob("*.png"))
    pairs = _tiny_pairs(tmp_path, images, {"v0": 2, "v1": 1})
    crop_boxes = BatchMoCoV2(48).crop_boxes
    crops = pair_items(tmp_path / "pairs.parquet", tmp_path / "frames", crops=True, same_crop=True)
    tracker = pair_items(tmp_path / "pairs.parquet", tmp_path / "frames", crops=True)
    assert len(crops) == len(tracker) == len(pairs)
    for item, row in zip(crops, pairs.itertuples(), strict=True):
        assert item.path_a == str(tmp_path / "frames" / row.path_a) and item.path_b is None
        assert item.box_a == (row.a_x, row.a_y, row.a_w, row.a_h)
    batch = collate_views(
        [DecodedViews(crops, seed=0)[(i, 0)] for i in range(len(crops))], crop_boxes
    )
    assert torch.equal(batch["sources"][0], batch["sources"][1])  # the same frame a ...
    assert torch.equal(batch["regions"][0], batch["regions"][1])  # ... and the same box a, twice
    assert batch["regions"][0][0].tolist() == [2, 3, 22, 21]
    assert len(batch["images"]) == len(pairs)  # frame b is never read
    other = collate_views(
        [DecodedViews(tracker, seed=0)[(i, 0)] for i in range(len(tracker))], crop_boxes
    )
    assert not torch.equal(other["sources"][0], other["sources"][1])
    assert other["regions"][1][0].tolist() == [8, 1, 24, 25]


def test_same_source_share_of_a_manifest_and_a_corpus(workspace, tmp_path):
    """The chance a random key shares the query's source, sum of (n_v / N)^2: from the manifest's
    `video` column (or the frame's folder without it), and from a corpus's annotations.csv."""
    from demystify.ssl.datasets import image_instances, image_items, pair_sources, same_source_share

    images = sorted((workspace / "data/world/corpora/object_centric").rglob("*.png"))
    pairs = _tiny_pairs(tmp_path, images, {"v0": 3, "v1": 1})
    assert same_source_share(pair_sources(tmp_path / "pairs.parquet")) == pytest.approx(
        (3 / 4) ** 2 + (1 / 4) ** 2
    )
    pairs.drop(columns="video").to_parquet(tmp_path / "no_video.parquet")
    assert pair_sources(tmp_path / "no_video.parquet").tolist() == ["v0", "v0", "v0", "v1"]
    assert same_source_share(pd.Series(["a", "b", "c", "d"])) == pytest.approx(0.25)

    corpus = tmp_path / "corpus"
    for i, image in enumerate(images[:4]):
        (corpus / "cat").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, corpus / "cat" / f"{i}.png")
    paths = [it.path_a for it in image_items(corpus)[0]]
    assert image_instances(corpus, paths) is None  # no annotations.csv: unknown
    pd.DataFrame({"path": [f"cat/{i}.png" for i in range(4)], "instance": [7, 7, 7, 9]}).to_csv(
        corpus / "annotations.csv", index=False
    )
    assert same_source_share(image_instances(corpus, paths)) == pytest.approx(0.625)
    pd.DataFrame({"path": ["cat/0.png"], "instance": [7]}).to_csv(
        corpus / "annotations.csv", index=False
    )
    assert image_instances(corpus, paths) is None  # an image it does not name: unknown, not guessed


@pytest.mark.parametrize(
    ("variant", "change", "expected"),
    [
        ("nope", {}, "variant 'nope' is not in params.yaml variants"),
        ("moco_scenes", {}, "corpus folder not found"),
        (
            "moco_object_centric",
            {"pretrain": {"batch_size": 64, "bn_splits": 2}},
            "batch 64 (pretrain.batch_size, the global batch) is larger than",
        ),
        (
            "moco_object_centric",
            {"variants": {"moco_object_centric": {"data": "data/empty"}}},
            "no training images",
        ),
    ],
)
def test_bad_inputs_stop_before_training(workspace, tmp_path, variant, change, expected):
    root = _copy_workspace(workspace, tmp_path / "ws")
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in change.items():
        for key, value in values.items():
            if isinstance(value, dict):
                params[section][key].update(value)
            else:
                params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (workspace / "data" / "empty").mkdir(exist_ok=True)
    proc = _run(root, variant)
    assert proc.returncode == 1
    assert expected in proc.stderr
    assert not (root / "models" / variant / "checkpoint.pt").exists()


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_queue_larger_than_corpus_is_clipped(workspace, tmp_path):
    root = _workspace_with(workspace, tmp_path / "ws", queue_size=4096)
    proc = _run(root, "moco_object_centric")
    assert proc.returncode == 0, proc.stderr
    assert "queue_size 4096 clipped to 24 (corpus of 24 images, global batch 4)" in proc.stderr


class _OfficialMoCo(torch.nn.Module):
    """The state of facebookresearch/moco's moco/builder.py MoCo: two torchvision ResNets with
    fc = Linear(feat, dim) (v2, mlp: Sequential(Linear(feat, feat), ReLU, Linear(feat, dim))), the
    queue [dim, K] and queue_ptr [1] buffers."""

    def __init__(self, arch: str, dim: int = 128, K: int = 1024, mlp: bool = True):
        super().__init__()
        self.encoder_q = getattr(torchvision.models, arch)(num_classes=dim)
        self.encoder_k = getattr(torchvision.models, arch)(num_classes=dim)
        if mlp:
            for enc in (self.encoder_q, self.encoder_k):
                feat = enc.fc.weight.shape[1]
                enc.fc = torch.nn.Sequential(torch.nn.Linear(feat, feat), torch.nn.ReLU(), enc.fc)
        with torch.no_grad():  # the key encoder trails the query encoder (momentum update)
            for q, k in zip(
                self.encoder_q.state_dict().values(),
                self.encoder_k.state_dict().values(),
                strict=True,
            ):
                k.copy_(q * 0.5 if q.is_floating_point() else q)
        self.register_buffer("queue", torch.nn.functional.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


def _official_checkpoint(path: Path, arch: str, mlp: bool) -> _OfficialMoCo:
    """Saved as main_moco.py saves it: the model inside DDP (`module.` keys), with its SGD state."""
    model = _OfficialMoCo(arch, mlp=mlp)
    wrapper = torch.nn.Module()
    wrapper.module = (
        model  # DistributedDataParallel's attribute, so the keys read `module.encoder_q...`
    )
    optimizer = torch.optim.SGD(wrapper.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    for q in model.encoder_q.parameters():
        q.grad = torch.zeros_like(q)
    optimizer.step()  # momentum buffers, as in a checkpoint saved mid-training
    torch.save(
        {
            "epoch": 200,
            "arch": arch,
            "state_dict": wrapper.state_dict(),
            "optimizer": optimizer.state_dict(),
        },
        path,
    )
    return model


def test_official_moco_layouts_and_torchvision_load_the_query_encoder(tmp_path):
    """MoCo v1 (fc head) and v2 (MLP head) checkpoints with their true key set (queue, queue_ptr,
    encoder_k, optimizer) and a torchvision state dict load as the evaluation backbone: the query
    encoder's weights, never the key encoder's, and the head dropped (main_lincls.py's rule)."""
    from demystify.evaluation.features import load_model

    torch.manual_seed(5)
    for mlp, name in (
        (False, "moco_v1_200ep_pretrain.pth.tar"),
        (True, "moco_v2_200ep_pretrain.pth.tar"),
    ):
        model = _official_checkpoint(tmp_path / name, "resnet18", mlp)
        keys = set(torch.load(tmp_path / name, weights_only=True)["state_dict"])
        assert {"module.queue", "module.queue_ptr", "module.encoder_k.conv1.weight"} <= keys
        assert ("module.encoder_q.fc.2.weight" in keys) == mlp
        loaded = load_model(tmp_path / name, "resnet18", "cpu").state_dict()
        query = {k: v for k, v in model.encoder_q.state_dict().items() if not k.startswith("fc.")}
        assert set(loaded) == set(query) and all(
            torch.equal(loaded[k], v) for k, v in query.items()
        )
        assert not torch.equal(loaded["conv1.weight"], model.encoder_k.conv1.weight)
    plain = torchvision.models.resnet18(
        num_classes=1000
    ).state_dict()  # as torchvision's weights files hold it
    torch.save(plain, tmp_path / "resnet18.pth")
    loaded = load_model(tmp_path / "resnet18.pth", "resnet18", "cpu").state_dict()
    assert all(torch.equal(loaded[k], plain[k]) for k in loaded) and "fc.weight" not in loaded
    with pytest.raises(
        bb.CheckpointError, match=r"moco_v2_200ep_pretrain.pth.tar: does not fit the model"
    ):
        load_model(
            tmp_path / "moco_v2_200ep_pretrain.pth.tar", "resnet50", "cpu"
        )  # another architecture
    v3 = {
        f"module.base_encoder.{k}": v for k, v in plain.items()
    }  # moco-v3: base/momentum encoder, predictor
    v3.update(
        {
            "module.momentum_encoder.conv1.weight": plain["conv1.weight"] * 0,
            "module.predictor.0.weight": torch.zeros(4, 4),
        }
    )
    assert bb.plain_resnet_state({"state_dict": v3}).keys() == {
        k for k in plain if not k.startswith("fc.")
    }


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_external_checkpoint_becomes_a_model(workspace, tmp_path):
    """An official MoCo v2 checkpoint (its true key set: queue, key encoder, optimizer) given as an
    `external` variant is exported as the plain query-encoder backbone; one of another architecture
    stops the stage naming the file. Before: refused as "unexpected ['queue', 'queue_ptr']"."""
    root = _copy_workspace(workspace, tmp_path / "ws")
    torch.manual_seed(3)
    official = _official_checkpoint(tmp_path / "moco.pth.tar", "resnet18", mlp=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["variants"]["theirs"] = {
        "method": "external",
        "positives": "none",
        "data": str(tmp_path / "moco.pth.tar"),
    }
    params["variants"]["wrong"] = {
        "method": "external",
        "positives": "none",
        "data": str(tmp_path / "moco.pth.tar"),
        "arch": "resnet50",
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    proc = _run(root, "theirs")
    assert proc.returncode == 0, proc.stderr
    exported = torch.load(root / "models" / "theirs" / "backbone.pt", weights_only=True)
    query = plain_backbone_state(official.encoder_q)
    assert exported.keys() == query.keys() and all(
        torch.equal(exported[k], v) for k, v in query.items()
    )
    proc = _run(root, "wrong")
    assert (
        proc.returncode == 1
        and "moco.pth.tar: does not fit the model (another architecture?)" in proc.stderr
    )


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_a_narrow_network_trains_exports_and_evaluates_at_its_width(workspace, tmp_path):
    """pretrain.width 0.5 halves every layer's channels: the stage trains and exports torchvision's
    key names at the narrow shapes, and evaluation builds the network at the width its file was
    trained at (256 features) without being told; a width that is not a whole number of channels
    stops the stage naming the value."""
    from demystify.evaluation.features import Loading, extract, load_model

    root = _workspace_with(workspace, tmp_path / "ws", width=0.5)
    proc = _run(root, "moco_object_centric")
    assert proc.returncode == 0, proc.stderr
    exported = torch.load(
        root / "models" / "moco_object_centric" / "backbone.pt", weights_only=True
    )
    assert exported.keys() == plain_backbone_state(backbone("resnet18")).keys()
    assert exported["conv1.weight"].shape[0] == 32 and exported["layer4.1.bn2.weight"].shape == (
        256,
    )
    model = load_model(root / "models" / "moco_object_centric" / "backbone.pt", "resnet18", "cpu")
    image = next((root / "data/world/corpora/object_centric").rglob("*.png"))
    assert extract(model, [str(image)], None, 32, Loading("cpu")).shape == (1, 256)
    proc = _run(
        _workspace_with(workspace, tmp_path / "ws3", width=0.3), "moco_object_centric"
    )  # 19.2 channels
    assert (
        proc.returncode == 1
        and "width 0.3: 64 x width must be a whole number of channels" in proc.stderr
    )


def test_stream_sampler_gives_every_variant_the_same_steps_whatever_its_corpus():
    """Steps, not passes: corpora of 10 and 37 items give the same number of batches; the stream is
    one seeded permutation per pass, read in whatever pieces (a resumed run's range), and the
    processes of a DDP run share each global batch, every other position (test_ddp.py)."""
    from demystify.ssl.runtime import Runtime
    from demystify.ssl.train import StreamSampler, warmup_cosine

    def drawn(n, start, stop, rank=0, world=1):
        s = StreamSampler(n, 4, Runtime(rank=rank, world=world), seed=3)
        s.set_range(start, stop)
        return list(s)

    small, large = drawn(10, 0, 9), drawn(37, 0, 9)
    assert len(small) == len(large) == 9 * 4
    assert sorted(i for i, p in small if p == 0) == list(range(10))  # a pass draws each item once
    assert max(p for _, p in small) == 3 and max(p for _, p in large) == 0
    assert drawn(10, 0, 4) + drawn(10, 4, 9) == small  # resumed at step 4: the same stream
    two = [drawn(10, 0, 9, rank=r, world=2) for r in (0, 1)]
    assert [x[:2] for x in two] == [
        small[0:4:2],
        small[1:4:2],
    ]  # step 0 (global batch 4) shared by rank
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1) and warmup_cosine(9, 10, 100) == 1.0
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5) and warmup_cosine(
        100, 10, 100
    ) == pytest.approx(0.0)


# --- resume and distribution --------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight(workspace, tmp_path_factory):
    """An uninterrupted run of moco_object_centric: 8 steps, logged every 4 (the corpus of 24 images
    is passed 1.3 times by 8 batches of 4: a budget in steps, not passes)."""
    root = _copy_workspace(workspace, tmp_path_factory.mktemp("straight") / "ws")
    proc = _run(
        root, "moco_object_centric", env={"DEMYSTIFY_TRACE": str(root.parent / "trace")}
    )  # test_ddp_*
    assert proc.returncode == 0, proc.stderr
    assert (
        json.loads((root / "results/pretrain/moco_object_centric/summary.json").read_text())[
            "steps"
        ]
        == 8
    )
    assert (
        _checkpoints(root, "moco_object_centric") == []
    )  # a finished stage leaves no checkpoint behind
    return root


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_dvclive_steps_are_optimizer_steps(straight):
    """dvclive's x is the optimizer step each logging period ended at (4 and 8 here), as in the
    overlaid curves, never the period's index; its summary's step is the last one."""
    live = straight / "results/pretrain/moco_object_centric"
    for rel, column in (
        ("train/loss.tsv", "loss"),
        ("train/lr.tsv", "lr"),
        ("monitor/knn_top1.tsv", "knn_top1"),
    ):
        table = pd.read_csv(live / "plots/metrics" / rel, sep="\t")
        assert table["step"].tolist() == [4, 8], rel
        assert table[column].notna().all() and len(table) == 2  # every period's value, each once
    summary = json.loads((live / "metrics.json").read_text())
    assert (
        summary["step"] == 8
        and summary["train"]["loss"] > 0
        and 0 <= summary["monitor"]["knn_top1"] <= 1
    )


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_seed_replicates_and_the_control_variants_train(workspace, straight, tmp_path):
    """Real training steps: a variant's own seed changes its backbone, the same seed given explicitly
    gives the very bytes of the run on pretrain.seed; `crops` trains on a pairs manifest and reports
    its same-video negatives; supervised (crop and flip) trains and has no queue."""
    root = _copy_workspace(workspace, tmp_path / "ws")
    images = sorted((workspace / "data/world/corpora/object_centric").rglob("*.png"))
    _tiny_pairs(root, images, {"v0": 5, "v1": 2, "v2": 1})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["pretrain"]["frames_root"] = "frames"
    original = params["variants"]["moco_object_centric"]
    params["variants"] |= {
        "moco_object_centric_s1": {**original, "seed": 1, "replicate_of": "moco_object_centric"},
        "moco_object_centric_s0": {**original, "seed": params["pretrain"]["seed"]},
        "moco_tracker_crops": {"method": "moco", "positives": "crops", "data": "pairs.parquet"},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for variant in (
        "moco_object_centric_s1",
        "moco_object_centric_s0",
        "moco_tracker_crops",
        "supervised",
    ):
        proc = _run(root, variant)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def backbone_bytes(where: Path, variant: str) -> bytes:
        return (where / "models" / variant / "backbone.pt").read_bytes()

    reference = backbone_bytes(straight, "moco_object_centric")
    assert backbone_bytes(root, "moco_object_centric_s0") == reference
    assert backbone_bytes(root, "moco_object_centric_s1") != reference

    def summary(where: Path, variant: str) -> dict:
        return json.loads((where / "results/pretrain" / variant / "summary.json").read_text())

    crops = summary(root, "moco_tracker_crops")
    assert crops["steps"] == 8 and crops["corpus_items"] == 8 and crops["final_loss"] > 0
    assert crops["same_source_negative_share"] == round(
        (5 / 8) ** 2 + (2 / 8) ** 2 + (1 / 8) ** 2, 6
    )
    annotations = pd.read_csv(workspace / "data/world/corpora/object_centric/annotations.csv")
    by_instance = annotations["instance"].value_counts(normalize=True)
    assert summary(straight, "moco_object_centric")["same_source_negative_share"] == round(
        float((by_instance**2).sum()), 6
    )
    supervised = summary(root, "supervised")
    assert supervised["steps"] == 8 and supervised["same_source_negative_share"] is None


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_resume_after_external_kill_matches_uninterrupted_run(workspace, straight, tmp_path):
    """A real SIGKILL from outside at whatever step the run has reached."""
    killed = _copy_workspace(workspace, tmp_path / "killed")
    run = _stage(killed, "moco_object_centric", start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        found = _checkpoints(killed, "moco_object_centric")
        if found and 2 <= ckpt.load(found[0])["step"] < 8:
            os.killpg(run.pid, signal.SIGKILL)  # a real kill, mid-run
            break
        assert run.poll() is None, "the run finished before it could be killed"
        time.sleep(0.05)
    run.wait()
    assert run.returncode == -signal.SIGKILL
    assert not (killed / "models/moco_object_centric/backbone.pt").exists()
    resumed = _run(killed, "moco_object_centric")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step" in resumed.stderr
    assert _outputs(killed, "moco_object_centric") == _outputs(straight, "moco_object_centric")


# where the process kills itself (DEMYSTIFY_KILL_AT): a random step, inside a step checkpoint's
# write, inside the monitor at the end of a logging period (the first ends at step 4; the DDP test
# kills inside the last period's monitor)
# (the same draw in every xdist worker of one run: they must collect the same test ids)
KILL_POINTS = [
    f"step:{random.Random(os.environ.get('PYTEST_XDIST_TESTRUNUID')).randint(1, 7)}",
    "checkpoint:6",
    "monitor:4",
]


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_anywhere_then_resume_gives_the_uninterrupted_outputs(
    workspace, straight, tmp_path, point
):
    root = _copy_workspace(workspace, tmp_path / "ws")
    (root / "machine.yaml").write_text(
        "pretrain: {checkpoint_every: 2}\n"
    )  # not in the key: a machine setting
    killed = _run(root, "moco_object_centric", env={"DEMYSTIFY_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = _run(root, "moco_object_centric")
    assert resumed.returncode == 0, resumed.stderr
    assert _outputs(root, "moco_object_centric") == _outputs(straight, "moco_object_centric"), point
    assert _checkpoints(root, "moco_object_centric") == []


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_checkpoint_of_other_data_is_never_resumed(workspace, straight, tmp_path):
    """Killed at step 4, then training images change (not the params): the rerun starts from step 0,
    its model differs from the one trained on the old data, and the old checkpoint is not touched."""
    root = _copy_workspace(workspace, tmp_path / "ws", copy_data=True)
    killed = _run(root, "moco_object_centric", env={"DEMYSTIFY_KILL_AT": "step:4"})
    assert killed.returncode == -signal.SIGKILL
    (old,) = _checkpoints(root, "moco_object_centric")
    images = sorted((root / "data/world/corpora/object_centric").rglob("*.png"))
    for image in images[:-1:2]:
        shutil.copy(images[-1], image)
    rerun = _run(root, "moco_object_centric")
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" not in rerun.stderr
    assert _checkpoints(root, "moco_object_centric") == [old]
    backbone = "models/moco_object_centric/backbone.pt"
    assert (root / backbone).read_bytes() != (straight / backbone).read_bytes()


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_failed_data_checks_stop_training(workspace, tmp_path):
    root = _copy_workspace(workspace, tmp_path / "ws")
    failure = "centricity_scenes: expect_column_median_to_be_between on column 'objects' failed (observed: 4.0)"
    gate.write(root / GATE, [failure])
    proc = _run(root, "moco_object_centric")
    assert proc.returncode == 1
    assert "data checks named in checks.fail_on failed" in proc.stderr and failure in proc.stderr
    (root / GATE).unlink()
    proc = _run(root, "random")
    assert proc.returncode == 1 and "run the data checks first" in proc.stderr
    assert not (root / "models").exists() and _checkpoints(root, "moco_object_centric") == []


@pytest.fixture(scope="module")
def ddp(workspace, tmp_path_factory):
    """moco_object_centric uninterrupted under torchrun, 2 processes (gloo) at the same global batch
    4 as `straight`: 2 images each, 1 of the 2 BN groups each; checkpoints in a folder of their own
    (DEMYSTIFY_CHECKPOINTS, as on a shared file system)."""
    root = _copy_workspace(workspace, tmp_path_factory.mktemp("ddp") / "ws")
    proc = _run(
        root,
        "moco_object_centric",
        torchrun=2,
        env={
            "DEMYSTIFY_TRACE": str(root.parent / "trace"),
            "DEMYSTIFY_CHECKPOINTS": str(root.parent / "shared"),
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("pretrain@moco_object_centric:") == 1  # rank 0 reports alone
    return root


def _trace(root: Path, rank: int = 0) -> list[dict]:
    return [
        json.loads(line)
        for line in (root.parent / "trace" / f"rank{rank}.jsonl").read_text().splitlines()
    ]


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_ddp_at_a_global_batch_trains_what_one_process_does(straight, ddp):
    """2 processes at global batch 4 against 1 process at batch 4 (was: 8 images a step, 2x the
    samples at the same lr schedule): per step, the union of the processes' items is the one
    process's batch (every other position each), the same lr, samples_seen and, within float
    rounding, loss. Measured relative loss differences: 6e-7 at step 0, 8e-5 at step 1; later
    steps are not compared: with 2 images per BN group the run is chaotic (a 1-process run with 2
    OpenMP threads instead of 1 departs as far, 5e-3 by step 3, 7e-2 by step 7)."""
    one, two = _trace(straight), [_trace(ddp, r) for r in (0, 1)]
    assert (
        [t["step"] for t in one]
        == [t["step"] for t in two[0]]
        == [t["step"] for t in two[1]]
        == list(range(8))
    )
    for a, b, c in zip(one, *two, strict=True):
        assert [tuple(x) for x in a["items"]] == [
            tuple(x) for pair in zip(b["items"], c["items"], strict=True) for x in pair
        ]
        assert a["lr"] == b["lr"] == c["lr"] and a["samples_seen"] == b["samples_seen"] == 4 * (
            a["step"] + 1
        )
        assert b["loss"] == c["loss"]  # every process logs the global batch's loss
    assert two[0][0]["loss"] == pytest.approx(one[0]["loss"], rel=1e-5)
    assert two[0][1]["loss"] == pytest.approx(one[1]["loss"], rel=1e-3)
    summaries = [
        json.loads((r / "results/pretrain/moco_object_centric/summary.json").read_text())
        for r in (straight, ddp)
    ]
    same = (
        "batch",
        "samples_seen",
        "steps",
        "passes",
        "corpus_items",
        "same_source_negative_share",
        "precision",
    )
    assert {k: summaries[1][k] for k in same} == {k: summaries[0][k] for k in same}
    assert (
        summaries[1]["batch"] == 4
        and summaries[1]["samples_seen"] == 32
        and summaries[1]["steps"] == 8
    )
    lrs = [
        pd.read_csv(r / "results/pretrain/moco_object_centric/plots/metrics/train/lr.tsv", sep="\t")
        for r in (straight, ddp)
    ]
    pd.testing.assert_frame_equal(lrs[0], lrs[1])
    assert not (ddp / ".checkpoints").exists() and not list((ddp.parent / "shared").rglob("*.pt"))


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_a_worker_killed_once_is_restarted_and_resumes(workspace, ddp, tmp_path):
    """torchrun --max-restarts=1, one worker SIGKILLed once at step 6 (the marker file keeps the
    restarted workers alive): torchrun restarts both, they resume from the checkpoint in
    DEMYSTIFY_CHECKPOINTS (a folder every node would see) and end with the uninterrupted 2-process
    run's bytes; the finished run leaves no checkpoint."""
    root = _copy_workspace(workspace, tmp_path / "ws")
    shared, marker = tmp_path / "shared", tmp_path / "killed-once"
    proc = _run(
        root,
        "moco_object_centric",
        torchrun=2,
        restarts=1,
        env={
            "DEMYSTIFY_KILL_AT": "step:6",
            "DEMYSTIFY_KILL_ONCE": str(marker),
            "DEMYSTIFY_CHECKPOINTS": str(shared),
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()  # a worker did die
    resumed = re.search(
        r"pretrain@moco_object_centric: resuming at step (\d) of 8 from (\S+)", proc.stderr
    )
    assert resumed and int(resumed[1]) >= 5 and Path(resumed[2]).is_relative_to(shared), (
        proc.stderr[-3000:]
    )
    assert _outputs(root, "moco_object_centric") == _outputs(ddp, "moco_object_centric")
    assert not list(shared.rglob("*.pt")) and not (root / ".checkpoints").exists()


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_ddp_refuses_a_bn_setting_that_leaks(workspace, tmp_path):
    """bn_splits 1 under 2 processes: one BN group of the global batch split over both, where a key
    would share statistics with its query (was: accepted). Refused by name before any data is read."""
    root = _workspace_with(workspace, tmp_path / "ws", bn_splits=1)
    proc = _run(root, "moco_object_centric", torchrun=2)
    assert proc.returncode != 0
    assert (
        "pretrain: pretrain@moco_object_centric: pretrain.bn_splits 1 (BN groups of the global batch) is not a "
        "multiple of the 2 processes (remainder 1)"
    ) in proc.stderr
    assert not (root / "models").exists() and not (root / ".checkpoints").exists()


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_a_a_test_over_disjoint_seeds_is_inconclusive(workspace, straight, tmp_path):
    """A/A: moco_object_centric pretrained under seeds {0, 1} and, as another 'variant', under seeds
    {2, 3} (real training steps), each scored by the classification probes, compared with the
    two-level interval (seeds, then test units) and the report's decision rule: no difference is
    found. A single-seed comparison's claim is labelled indicative."""
    from demystify.evaluation import classification
    from demystify.evaluation.features import Model
    from demystify.report import claims as cl
    from demystify.report.evidence import Evidence

    root = _copy_workspace(workspace, tmp_path / "ws")
    params = yaml.safe_load((root / "params.yaml").read_text())
    original = params["variants"]["moco_object_centric"]
    seeds = {"s1": 1, "s2": 2, "s3": 3}
    params["variants"] |= {
        name: {**original, "seed": s, "replicate_of": "moco_object_centric"}
        for name, s in seeds.items()
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for name in seeds:
        proc = _run(root, name)
        assert proc.returncode == 0, proc.stderr[-3000:]
    p = config.load("classification", path=root / "params.yaml")["classification"]
    p = p.model_copy(update={"data": str(workspace / "data/world/eval/classification")})
    results = tmp_path / "results"
    backbones = {
        "s0": straight / "models/moco_object_centric/backbone.pt",
        **{n: root / "models" / n / "backbone.pt" for n in seeds},
    }
    for name, path in backbones.items():
        classification.run_stage(
            Model(name, "resnet18", path),
            p,
            results / "classification" / name,
            device="cpu",
            progress=False,
        )
    evidence = Evidence(results, resamples=500, replicates={"A": ["s0", "s1"], "B": ["s2", "s3"]})
    outcomes = []
    for probe in ("linear_top1", "knn_top1"):
        metric = ("classification", "all", probe)
        interval = evidence.difference(metric, "A", "B")
        assert interval.seeds == 2 and interval.low <= 0 <= interval.high
        outcomes.append(
            cl.Outcome(
                cl.Comparison(1, probe, "A", "B", metric, ("A",)),
                [],
                [],
                cl.INCONCLUSIVE,
                interval=interval,
            )
        )
    cl._decide(outcomes, 0.05, {})
    assert [o.verdict for o in outcomes] == [cl.INCONCLUSIVE] * 2
    single = cl.Gate(
        "s0",
        {k: evidence.difference(("classification", "all", k), "s0", "s2") for k in cl.GATE_PROBES},
        {"knn_top1": 1.0},
        seeds=1,
    )
    level, reasons = cl.claim_level(outcomes[:1], {"A": single}, 0.4, 3)
    assert level == cl.INDICATIVE and any("cover test items only" in r for r in reasons)


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
@pytest.mark.parametrize(
    ("variant", "lr"), [("supervised", 1e30), ("moco_object_centric", 1e30), ("supervised", 1e4)]
)
def test_a_diverging_run_stops_at_the_first_non_finite_loss(workspace, tmp_path, variant, lr):
    """An absurd learning rate: the stage stops with one line naming the step and the likely cause,
    exits 1, and exports no backbone (was: exit 0, a backbone of NaN weights; lr 1e4 on supervised
    was exit 0 with a finite loss of 4e16, which the ceiling now catches)."""
    root = _workspace_with(workspace, tmp_path / "ws", lr=lr)
    proc = _run(root, variant)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert (
        "training diverged" in proc.stderr
        and f"pretrain.lr = {lr}" in proc.stderr
        and "at step" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert not (root / "models" / variant / "backbone.pt").exists()


def test_the_loss_ceiling_is_what_a_healthy_moco_run_cannot_pass():
    """InfoNCE on unit vectors: the worst case (positive logit -1/T, every negative +1/T) stays under
    the ceiling, and a finite loss past it is refused."""
    from demystify.ssl.train import loss_ceiling

    queue, t = 4096, 0.2
    logits = torch.tensor([[-1 / t] + [1 / t] * queue])
    worst = float(torch.nn.functional.cross_entropy(logits, torch.zeros(1, dtype=torch.long)))
    assert worst <= loss_ceiling("moco", queue, t, 0) < worst + 1
    assert loss_ceiling("supervised", 0, t, 8) < 4e16
