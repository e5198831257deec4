"""conf/ (Hydra) and the committed params.yaml must agree: `dvc repro` reads the latter."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from demystify.core import config
from demystify.tools.params_file import compose

ROOT = Path(__file__).resolve().parents[1]


def test_conf_composes_to_committed_params(tmp_path):
    out = tmp_path / "params.yaml"
    compose(out, config_dir=ROOT / "conf")  # DVC's own compose_and_dump, as `dvc exp run` uses
    composed = yaml.safe_load(out.read_text())
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert composed == committed, "conf/ changed: regenerate params.yaml with `make params`"


@pytest.mark.parametrize("data", ["synthetic", "folder"])
@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu", "paper"])
def test_every_scale_is_valid(tmp_path, scale, data):
    """Every composition of the scale and data presets passes the schema, keys and values."""
    out = tmp_path / "params.yaml"
    compose(
        out,
        [
            f"scale={scale}",
            f"data={data}",
            *(["data.videos=/d/videos"] if data == "folder" else []),
        ],
        config_dir=ROOT / "conf",
    )
    sections = config.load(*config.SECTIONS, path=out)
    assert sections["world"].categories >= 8 and sections["data"].source == data


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("+seed=1", "unknown top-level key(s): seed"),
        ("+pretrain.seeds=[0,1]", "pretrain.seeds = [0, 1]: unknown key"),
        ("+variants.moco_frames.lr=0.1", "variants.moco_frames.lr = 0.1: unknown key"),
    ],
)
def test_a_key_outside_the_schema_is_refused_even_with_plus(tmp_path, override, expected):
    """Before: Hydra refused `seed=1` but `+seed=1` composed silently (no stage reads it, so nothing
    reran). Now the key is named and params.yaml is left as it was; a `+` variant still composes."""
    out = tmp_path / "params.yaml"
    compose(out, ["scale=smoke"], config_dir=ROOT / "conf")
    before = out.read_bytes()
    with pytest.raises(config.ConfigError, match=re.escape(expected)):
        compose(out, ["scale=smoke", override], config_dir=ROOT / "conf")
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["params.yaml"]
    compose(
        out,
        ["scale=smoke", "+variants.moco_extra={method:moco,positives:images,data:data/frames}"],
        config_dir=ROOT / "conf",
    )
    assert config.load("variants", path=out)["variants"]["moco_extra"].positives == "images"


def test_folder_data_needs_its_videos_only(tmp_path):
    """`-S data=folder -S data.videos=...` as the README writes it: no separate data.root needed."""
    out = tmp_path / "params.yaml"
    compose(out, ["data=folder"], config_dir=ROOT / "conf")
    with pytest.raises(config.ConfigError, match=r"data: videos: not set"):
        config.load("data", path=out)
    compose(out, ["data=folder", "data.videos=/d/videos"], config_dir=ROOT / "conf")
    data = config.load("data", path=out)["data"]
    assert (data.videos, data.root) == ("/d/videos", "data/world")
