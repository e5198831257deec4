"""The params.yaml schema rejects bad values by name, before any work."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_cmd import stage_argv

from demystify.core import config

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
        # disjoint classification train, val and test instances need three per category
        (
            "world.instances_per_category",
            2,
            "instances_per_category: 2 is too few for disjoint classification",
        ),
        # claim 2's equal data: object-centric images = scenes = scene crops
        (
            "world.corpora.scenes",
            999,
            "object_centric_per_category = 10 x 200 = 2000 != corpora.scenes 999",
        ),
        (
            "world.corpora.objects_per_scene",
            [3, 200],
            "corpora.objects_per_scene: maximum 200 > the 150 instances",
        ),
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
        # ge=0 alone lets inf through
        ("pretrain.weight_decay", ".inf", "pretrain.weight_decay = inf"),
        ("pairs.max_scale_change", ".inf", "pairs.max_scale_change = inf"),
        (
            "classification.linear.weight_decays",
            "[0.0, .inf]",
            "classification.linear.weight_decays.1 = inf",
        ),
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
    with pytest.raises(
        config.ConfigError, match="unknown top-level key.*seed"
    ):  # no stage reads one
        config.validate({**params, "seed": 1}, "frames")
    del bad["frame"], bad["frames"]
    with pytest.raises(config.ConfigError, match="missing section 'frames'"):
        config.validate(bad, "frames")


def test_an_unknown_key_anywhere_stops_every_stage(params):
    """`dvc exp run -S +seed=1` (Hydra's `+` adds any key) wrote a key no stage reads: before, only a
    stage validating that very section refused it, so nothing reran and an experiment was recorded.
    Now the whole tree is checked against the schema by whatever section a stage loads."""
    for dotted, value in (
        ("seed", 1),
        ("pretrain.foo", 1),
        ("world.videos.spin", 3),
        ("variants.moco_frames.lr", 0.1),
        ("classification.knn.kk", 5),
    ):
        bad = copy.deepcopy(params)
        _set(bad, dotted, value)
        expected = (
            f"unknown top-level key(s): {dotted} "
            if "." not in dotted
            else f"{dotted} = {value!r}: unknown key"
        )
        with pytest.raises(config.ConfigError, match=re.escape(expected)):
            config.validate(bad, "frames")  # a section that does not hold the key
    assert config.validate(params, "frames")["frames"].fps > 0  # the committed tree still passes


def test_the_whole_file_check_names_the_key(tmp_path, params):
    """`python -m demystify.core.config params.yaml`: what a stage depending on the whole params.yaml can
    run, so that a key no stage reads still fails `dvc exp run`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({**params, "seed": 1}))
    proc = subprocess.run(
        [sys.executable, "-m", "demystify.core.config", str(path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1 and "unknown top-level key(s): seed" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    path.write_text(yaml.safe_dump(params))
    proc = subprocess.run(
        [sys.executable, "-m", "demystify.core.config", str(path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0 and not proc.stderr, proc.stderr


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


@pytest.mark.parametrize(
    ("stage", "key", "expected"),
    [
        ("synthesize", "world.videos.fps", "world.videos.fps = -2.0"),
        ("extract_frames", "frames.fps", "frames.fps = -2.0"),
        # `-S +seed=...`: no stage reads it
        ("extract_frames", "seed", "unknown top-level key(s): seed"),
    ],
)
def test_stage_stops_before_work(tmp_path, params, stage, key, expected):
    bad = copy.deepcopy(params)
    _set(bad, key, -2.0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    item = (
        "0" if stage == "extract_frames" else None
    )  # a foreach over frames.shards: shard 0's command
    proc = subprocess.run(
        stage_argv(stage, tmp_path / "params.yaml", item),
        cwd=tmp_path,  # as dvc.yaml runs it
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1
    assert expected in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


# --- variants: names, per-variant seeds and seed replicates ---------------------------------------


def _moco(positives: str = "images", data: str = "data/oc", **more) -> dict:
    """A moco variant's entry in params.yaml."""
    return {"method": "moco", "positives": positives, "data": data, **more}


def _variants(**extra) -> dict:
    base = {
        "moco_object_centric": _moco(),
        "moco_tracker": _moco("tracker", "data/pairs.parquet"),
    }
    return {"pretrain": {"seed": 0}, "variants": {**base, **extra}}


def test_a_seed_replicate_is_valid():
    replicate = _moco(seed=1, replicate_of="moco_object_centric")
    out = config.validate(_variants(moco_object_centric_s1=replicate), "variants")
    replicate = out["variants"]["moco_object_centric_s1"]
    assert replicate.seed == 1 and replicate.replicate_of == "moco_object_centric"
    assert out["variants"]["moco_object_centric"].seed is None  # pretrain.seed


@pytest.mark.parametrize(
    ("replicate", "expected"),
    [
        (
            {"replicate_of": "nope", "seed": 1},
            "variants.moco_object_centric_s1.replicate_of = 'nope': names no other variant",
        ),
        (
            {"replicate_of": "moco_object_centric_s1", "seed": 1},
            "replicate_of = 'moco_object_centric_s1': names no other",
        ),
        (
            {"replicate_of": "moco_object_centric"},
            "its seed 0 is the seed of 'moco_object_centric'",
        ),  # pretrain.seed twice
        (
            {"replicate_of": "moco_object_centric", "seed": 0},
            "its seed 0 is the seed of 'moco_object_centric'",
        ),
        (
            {"replicate_of": "moco_object_centric", "seed": 1, "data": "data/other"},
            "data 'data/other' != 'data/oc'",
        ),
        (
            {"replicate_of": "moco_tracker", "seed": 1},
            "positives 'images' != 'tracker', data 'data/oc' != 'data/pairs.parquet'",
        ),
        (
            {"replicate_of": "moco_object_centric", "seed": 1, "arch": "resnet50"},
            "arch 'resnet50' != None",
        ),
        (
            {"replicate_of": "moco_object_centric", "seed": -1},
            "variants.moco_object_centric_s1.seed = -1",
        ),
        (
            {"replicate_of": "moco_object_centric", "seed": True},
            "variants.moco_object_centric_s1.seed = True",
        ),
    ],
)
def test_a_bad_replicate_is_named(replicate, expected):
    entry = _moco(**replicate)
    with pytest.raises(config.ConfigError) as err:
        config.validate(_variants(moco_object_centric_s1=entry), "variants")
    assert expected in str(err.value)


def test_replicates_of_one_variant_need_distinct_seeds_and_name_the_original():
    entry = _moco(replicate_of="moco_object_centric")
    with pytest.raises(
        config.ConfigError,
        match=r"variants\.s2\.replicate_of = 'moco_object_centric': its seed 1 is the seed of 's1'",
    ):
        config.validate(_variants(s1={**entry, "seed": 1}, s2={**entry, "seed": 1}), "variants")
    with pytest.raises(
        config.ConfigError,
        match=r"variants\.s2\.replicate_of = 's1': is itself a replicate; name its original",
    ):
        config.validate(
            _variants(s1={**entry, "seed": 1}, s2={**entry, "seed": 2, "replicate_of": "s1"}),
            "variants",
        )
    # the original's own seed counts: pretrain.seed 0 overridden to 5 frees 0 for a replicate
    params = _variants(s1={**entry, "seed": 0})
    params["variants"]["moco_object_centric"]["seed"] = 5
    config.validate(params, "variants")


@pytest.mark.parametrize("name", ["moco-extra", "moco.extra", "moco extra", "../up", "", 7])
def test_an_unsafe_variant_name_is_named(name):
    params = _variants(**{})
    params["variants"][name] = _moco()
    with pytest.raises(
        config.ConfigError, match=rf"variants\.{re.escape(str(name))}: a variant name may hold only"
    ):
        config.validate(params, "variants")


def test_crops_positives_go_with_moco_only():
    crops = _moco("crops", "data/pairs.parquet")
    ok = config.validate(_variants(moco_tracker_crops=crops), "variants")
    assert ok["variants"]["moco_tracker_crops"].positives == "crops"
    with pytest.raises(
        config.ConfigError, match="positives 'crops' does not go with method 'supervised'"
    ):
        config.validate(
            _variants(bad={"method": "supervised", "positives": "crops", "data": "d"}), "variants"
        )


def test_the_check_params_stage_names_a_key_no_stage_reads(tmp_path):
    """`dvc exp run -S +seed=1` adds a top-level key that no stage reads: the check_params stage (every
    key of params.yaml is its param) fails naming it; the committed params.yaml passes."""
    script = ROOT / "stages" / "check_params.py"
    good = subprocess.run(
        [sys.executable, str(script), "--params", str(ROOT / "params.yaml")],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stderr
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["seed"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bad = subprocess.run(
        [sys.executable, str(script), "--params", str(tmp_path / "params.yaml")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "seed" in bad.stderr and "Traceback" not in bad.stderr, (
        bad.stderr
    )
