"""The params.yaml schema rejects bad values by name, before any work."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc_cmd import stage_argv

from demystify import config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_committed_params_are_valid(params):
    out = config.validate(params, *config.SECTIONS)
    assert out["frames"].fps > 0
    assert out["world"].categories >= 8
    assert out["world"].instances_per_category >= 20


def _set(d: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for key in path:
        d = d[key]
    d[last] = value


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("frames.fps", -1, "frames.fps = -1"),
        ("frames.fps", 0, "frames.fps = 0"),
        ("frames.size", "64", "frames.size = '64'"),
        ("frames.max_rejected", 1.5, "frames.max_rejected = 1.5"),
        ("frames.jpeg_quality", 1, "frames.jpeg_quality = 1"),
        ("world.videos.distractors", [3, 1], "minimum 3 > maximum 1"),
        ("world.videos.occluders", [-1, 1], "negative minimum -1"),
        ("world.videos.distractors", ["0", 1], "world.videos.distractors.0 = '0'"),
        ("world.videos.width", 63, "must be even"),
        ("world.categories", 11, "world.categories = 11"),
        ("world.image_size", 8.5, "world.image_size = 8.5"),
        ("world.evaluation.aloi_view_step_deg", 7, "does not divide 360"),
        ("world.evaluation.instance_per_bin", 99, "instance_per_bin: 99 > instances_per_category"),
        ("data.source", "s3", "data.source = 's3'"),
        ("data.videos", "???", "data.videos"),
    ],
)
def test_bad_value_is_named(params, key, value, expected):
    bad = copy.deepcopy(params)
    _set(bad, key, value)
    section = key.split(".")[0]
    with pytest.raises(config.ConfigError) as err:
        config.validate(bad, section)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("frames.fps", ".inf", "frames.fps = inf: Input should be a finite number"),
        ("frames.fps", ".nan", "frames.fps = nan: Input should be a finite number"),
        ("pretrain.lr", ".inf", "pretrain.lr = inf"),
        ("pretrain.weight_decay", ".inf", "pretrain.weight_decay = inf"),  # ge=0 alone lets inf through
        ("pairs.max_scale_change", ".inf", "pairs.max_scale_change = inf"),
        ("classification.linear.weight_decays", "[0.0, .inf]", "classification.linear.weight_decays.1 = inf"),
        ("classification.svm.costs", "[-.inf]", "classification.svm.costs.0 = -inf"),
    ],
)
def test_non_finite_number_is_named(params, key, value, expected):
    """inf / nan as YAML writes them (.inf, .nan) satisfy a bare > 0 or >= 0 bound; no float accepts them."""
    bad = copy.deepcopy(params)
    _set(bad, key, yaml.safe_load(value))
    with pytest.raises(config.ConfigError) as err:
        config.validate(bad, key.split(".")[0])
    assert expected in str(err.value)


def test_unknown_key_is_named(params):
    bad = copy.deepcopy(params)
    bad["frames"]["fsp"] = 5
    with pytest.raises(config.ConfigError, match=r"frames\.fsp = 5: unknown key"):
        config.validate(bad, "frames")


def test_unknown_top_level_and_missing_sections(params):
    bad = copy.deepcopy(params)
    bad["frame"] = {}
    with pytest.raises(config.ConfigError, match="unknown top-level key.*frame"):
        config.validate(bad, "frames")
    with pytest.raises(config.ConfigError, match="unknown top-level key.*seed"):  # no stage reads one
        config.validate({**params, "seed": 1}, "frames")
    del bad["frame"], bad["frames"]
    with pytest.raises(config.ConfigError, match="missing section 'frames'"):
        config.validate(bad, "frames")


def test_missing_key_is_named(params):
    bad = copy.deepcopy(params)
    del bad["world"]["videos"]["fps"]
    with pytest.raises(config.ConfigError, match=r"world\.videos\.fps: missing"):
        config.validate(bad, "world")


def test_unreadable_params_file(tmp_path):
    (tmp_path / "params.yaml").write_text("world: [unclosed\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load("world", path=tmp_path / "params.yaml")
    with pytest.raises(config.ConfigError, match="file not found"):
        config.load("world", path=tmp_path / "nope.yaml")


@pytest.mark.parametrize(("stage", "key"), [("synthesize", "world.videos.fps"), ("extract_frames", "frames.fps")])
def test_stage_stops_before_work(tmp_path, params, stage, key):
    bad = copy.deepcopy(params)
    _set(bad, key, -2.0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(stage_argv(stage, tmp_path / "params.yaml"), cwd=tmp_path,  # as dvc.yaml runs it
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert f"{key} = -2.0" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written

