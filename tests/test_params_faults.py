"""Params that validate but cannot run, params.yaml read as DVC reads it (YAML 1.2), and names and
paths that the shell running a stage's cmd must never read as code (issue 22)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from demystify.core import config
from demystify.core.frames_store import FrameStore, shard_of
from demystify.evaluation import invariance
from demystify.evaluation.features import Model
from demystify.evaluation.invariance import InvarianceError, set_contributions
from demystify.tools.params_file import compose
from demystify.tools.repo_copy import dvc_env

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from video_fixtures import make_clip  # noqa: E402


def _params() -> dict:
    return config.read_yaml(ROOT / "params.yaml")


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- YAML 1.2, as DVC reads params.yaml ------------------------------------------------------------

TRICKY = "a: 1e-3\nb: yes\nc: on\nd: 0o17\ne: 1.0e+3\nf: ~\ng: 2001-12-14\nh: 1:20\ni: .5\nj: NO\n"


def test_params_are_read_as_dvc_reads_them():
    from dvc.utils.serialize._yaml import parse_yaml

    assert config.parse_yaml(TRICKY) == parse_yaml(TRICKY, "params.yaml")
    assert (
        yaml.safe_load("a: 1e-3\nb: yes")["a"] == "1e-3"
    )  # PyYAML (YAML 1.1): what went wrong before
    assert config.parse_yaml("a: 1e-3\nb: yes") == {"a": 0.001, "b": "yes"}


def test_a_float_in_e_notation_is_a_float_and_yes_is_not_a_bool(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    assert "  lr: 0.06\n" in text and "  mlp: true\n" in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("  lr: 0.06\n", "  lr: 1e-3\n"))
    p = config.load("pretrain", "frames", path=path)
    assert p["pretrain"].lr == 0.001 and p["pretrain"].mlp is True  # the rest as before
    path.write_text(text.replace("  mlp: true\n", "  mlp: yes\n"))
    with pytest.raises(
        config.ConfigError, match=r"pretrain\.mlp = 'yes': Input should be a valid boolean"
    ):
        config.load("pretrain", path=path)
    assert config.load("frames", path=path)["frames"].fps == 5.0  # other sections still load
    path.write_text(text + "frames:\n  fps: 2.0\n")  # PyYAML kept the last of two; DVC refuses
    with pytest.raises(config.ConfigError, match="not valid YAML.*duplicate key"):
        config.load("frames", path=path)


# --- params that validate but cannot run -----------------------------------------------------------


@pytest.mark.parametrize(
    "batch, splits, match",
    [
        (
            64,
            64,
            r"pretrain: batch_size 64 / bn_splits 64 leaves 1 sample per BN group; each needs at least 2",
        ),
        (1, 1, r"pretrain: batch_size 1 / bn_splits 1 leaves 1 sample per BN group"),
        (6, 4, r"pretrain: batch_size 6 is not a multiple of bn_splits 4"),
    ],
)
def test_batch_and_bn_groups(batch, splits, match):
    data = _params()
    data["pretrain"].update(batch_size=batch, bn_splits=splits)
    with pytest.raises(config.ConfigError, match=match):
        config.validate(data, "pretrain")
    data["pretrain"].update(batch_size=4, bn_splits=2)  # the smoke scale: groups of 2
    assert config.validate(data, "pretrain")["pretrain"].batch_size == 4


def test_queue_and_head_memory(monkeypatch):
    data = _params()
    data["pretrain"]["dim"] = 10**9
    with pytest.raises(
        config.ConfigError,
        match=r"pretrain: dim 1000000000 x queue_size 256: the queue and "
        r"projection head alone need \d+\.\d GiB, more than this machine's",
    ):
        config.validate(data, "pretrain")
    data["pretrain"]["dim"] = 128
    assert config.validate(data, "pretrain")["pretrain"].dim == 128
    monkeypatch.setattr(config, "memory_bytes", lambda: 2**19)  # a 512 KiB machine
    with pytest.raises(config.ConfigError, match=r"dim 128 x queue_size 256: .* 0\.0 GiB"):
        config.validate(data, "pretrain")


def test_k_beyond_the_feature_width():
    data = _params()
    data["invariance"]["ks"] = [10, 1000]
    with pytest.raises(
        config.ConfigError,
        match=r"invariance\.ks = \[10, 1000\]: K 1000 > the 256 feature units "
        r"of resnet18 at pretrain\.width 0\.5 \(pretrain\.arch\)",
    ):
        config.validate(data, "invariance", "pretrain", "variants")
    data["pretrain"]["arch"] = "resnet50"  # 2048 x 0.5 units: K 1000 fits
    assert config.validate(data, "invariance", "pretrain", "variants")["invariance"].ks == [
        10,
        1000,
    ]
    data["variants"]["moco_frames"]["arch"] = "resnet34"
    with pytest.raises(
        config.ConfigError,
        match=r"K 1000 > the 256 feature units of resnet34 at pretrain\.width 0\.5 "
        r"\(variants\.moco_frames\.arch\)",
    ):
        config.validate(data, "invariance")


def test_scores_name_an_impossible_k():
    rng = np.random.default_rng(0)
    c = set_contributions(
        rng.normal(size=(24, 16)), np.repeat(np.arange(8), 3), np.repeat(np.arange(4), 6), 10
    )
    with pytest.raises(
        InvarianceError, match="top-K of 1000 neurons asked for, the features have 16"
    ):
        c.full((10, 1000))  # was torch's "selected index k out of range"
    assert set(c.full((10, 16))) == {10, 16}


def _aloi(root: Path) -> None:
    import torch
    from torchvision.io import write_png

    g = torch.Generator().manual_seed(0)
    for obj in range(1, 5):
        for deg in (0, 5, 10):
            path = root / "aloi_red2_view" / "png2" / str(obj) / f"{obj}_r{deg}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png(torch.randint(0, 256, (3, 20, 20), generator=g, dtype=torch.uint8), str(path))


def test_a_set_with_one_impossible_k_keeps_the_others(tmp_path, capsys):
    """An impossible K (here: K > the features' width, which config refuses for the configured
    architectures) is skipped with a note for the set; the other K is still scored and written.
    Before: the whole set was skipped, every set alike, and metrics.json was {} with exit 0."""
    _aloi(tmp_path / "aloi")
    ip = config.InvarianceParams.model_validate(
        {
            **_params()["invariance"],
            "sets": ["aloi_view"],
            "ks": [10, 1000],
            "aloi": str(tmp_path / "aloi"),
            "aloi_size": 16,
            "batch_size": 6,
        }
    )
    out = tmp_path / "out"
    untrained = Model("m", "resnet18", None)
    metrics = invariance.run_stage(untrained, ip, out, device="cpu", progress=False)
    assert set(metrics["aloi_view"]) == {"top10", "images", "sets"} and np.isfinite(
        metrics["aloi_view"]["top10"]
    )
    assert json.loads((out / "metrics.json").read_text()) == metrics
    skipped = json.loads((out / "skipped.json").read_text())
    assert skipped["ks"] == {"aloi_view": {"top1000": "K 1000 > the 512 feature units"}}
    assert "invariance set aloi_view: top1000 skipped" in capsys.readouterr().err
    assert (out / "contributions" / "aloi_view.npz").is_file()
    # no K fits anywhere: a named error, never an empty metrics file with exit 0
    with pytest.raises(
        InvarianceError,
        match=r"no invariance set could be scored: aloi_view: no K of "
        r"invariance.ks \[1000\] fits the 512 feature units",
    ):
        invariance.run_stage(
            untrained,
            ip.model_copy(update={"ks": [1000]}),
            tmp_path / "o2",
            device="cpu",
            progress=False,
        )
    assert not (tmp_path / "o2" / "metrics.json").exists()


# --- names and paths on the stage commands ---------------------------------------------------------


def _cmds() -> dict[str, str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: s.get("do", s)["cmd"] for name, s in stages.items()}


def test_every_interpolated_value_is_single_quoted_and_listed():
    hostile = 'it $(touch PWNED) `id` "q" ${HOME}'
    used = set()
    for name, cmd in _cmds().items():
        keys = re.findall(r"\$\{([^}]+)\}", cmd)
        used |= {
            "variants.*." + k.removeprefix("item.") if k.startswith("item.") else k
            for k in keys
            if k not in ("key", "item")
        }  # a variant's name, a shard's index: both checked by config
        words = shlex.split(re.sub(r"\$\{[^}]+\}", lambda m: hostile, cmd))  # as sh splits it
        assert sum(w.count(hostile) for w in words) == len(keys), (
            f"{name}: a ${{...}} outside single quotes: {cmd}"
        )
    assert used == set(config.CMD_KEYS)


@pytest.mark.parametrize(
    "key, value",
    [("data.videos", "/d/it's"), ("variants.moco_frames.data", "x'$(id)'"), ("report.sweep", "'")],
)
def test_a_single_quote_is_refused_by_name(key, value):
    data = _params()
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(
        config.ConfigError, match=re.escape(f"{key} = {value!r}: a single quote would end")
    ):
        config.validate(data, "frames")  # whatever section a stage loads


def test_variant_names_are_checked_by_every_stage():
    data = _params()
    data["variants"]["x$(touch PWNED)"] = data["variants"]["moco_frames"]
    with pytest.raises(
        config.ConfigError, match=r"variants\.x\$\(touch PWNED\): a variant name may hold only"
    ):
        config.validate(data, "frames")


def test_compose_refuses_before_any_command_and_keeps_params(tmp_path):
    out = tmp_path / "params.yaml"
    out.write_text("kept: 1\n")
    with pytest.raises(config.ConfigError, match=r"data\.videos = \"/d/it's\": a single quote"):
        compose(out, ['data.videos="/d/it\'s"'], config_dir=ROOT / "conf")
    assert out.read_text() == "kept: 1\n" and [p.name for p in tmp_path.iterdir()] == [
        "params.yaml"
    ]
    odd = 'my "odd" $(touch PWNED) dir'  # anything but a single quote: a path like any other
    compose(out, [f"data.videos='{odd}'"], config_dir=ROOT / "conf")
    assert config.load("data", path=out)["data"].videos == odd
    assert not list(tmp_path.glob("PWNED")) and not (Path.cwd() / "PWNED").exists()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    """A DVC repo (no git) with the project's dvc.yaml, stages and package, smoke params."""
    root = tmp_path_factory.mktemp("repo")
    for name in ("stages", "src"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "dvc.yaml", root / "dvc.yaml")
    compose(root / "params.yaml", ["scale=smoke"], config_dir=ROOT / "conf")
    env = dvc_env(root, OMP_NUM_THREADS="1")
    subprocess.run(["dvc", "init", "-q", "--no-scm"], cwd=root, env=env, check=True)
    return root, env


def _repro(root: Path, env: dict, stage: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["dvc", "repro", "--single-item", stage], cwd=root, env=env, capture_output=True, text=True
    )


def test_a_videos_folder_with_quotes_and_spaces_runs_through_dvc(repo):
    root, env = repo
    videos = 'vids/my "odd" dir'
    make_clip(root / videos / "a.mp4")
    data = config.read_yaml(root / "params.yaml")
    data["data"]["videos"] = videos
    _write(root / "params.yaml", data)
    (root / "machine.yaml").write_text(
        "frames: {workers: 1}\n"
    )  # one ffmpeg process (machine.yaml)
    plan = _repro(root, env, "plan_shards")  # the shards' video lists, which extract_frames reads
    assert plan.returncode == 0 and "--videos 'vids/my \"odd\" dir'" in plan.stdout, (
        plan.stdout + plan.stderr
    )
    proc = _repro(root, env, "extract_frames")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--videos 'vids/my \"odd\" dir'" in proc.stdout
    shard = f"shard-{shard_of('a', len(data['frames']['shards']))}"  # the shard of video 'a'
    assert json.loads((root / f"results/frames/{shard}/metrics.json").read_text())["frames"] == 10
    assert FrameStore(root / "data/frames").exists("a/000009.jpg")


def test_a_variant_name_never_runs_as_shell(repo):
    """Before: `touch PWNED` ran (the cmd held ${key} unquoted); now the name reaches the script
    literally and is refused by name, and the stage fails."""
    root, env = repo
    data = config.read_yaml(root / "params.yaml")
    name = "x$(touch PWNED)"
    data["variants"] = {name: {"method": "moco", "positives": "images", "data": 'corp "a" b'}}
    _write(root / "params.yaml", data)
    for folder in ('corp "a" b', data["pretrain"]["monitor"], "results/checks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "results/checks/gate.json").write_text("{}")
    proc = _repro(root, env, f"pretrain@{name}")
    assert proc.returncode != 0
    assert (
        "pretrain: params.yaml: variants.x$(touch PWNED): a variant name may hold only letters"
        in proc.stderr
    )
    assert not list(root.rglob("PWNED")) and not (Path.cwd() / "PWNED").exists()
    assert not (root / "models").exists()  # nothing trained or written
