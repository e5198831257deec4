"""conf/ (Hydra) and the committed params.yaml must agree: `dvc repro` reads the latter."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from demystify import config
from demystify.params_file import compose

ROOT = Path(__file__).resolve().parents[1]


def test_conf_composes_to_committed_params(tmp_path):
    out = tmp_path / "params.yaml"
    compose(out, config_dir=ROOT / "conf")  # DVC's own compose_and_dump, as `dvc exp run` uses
    composed = yaml.safe_load(out.read_text())
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert composed == committed, "conf/ changed: regenerate params.yaml with `make params`"


@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu", "paper"])
def test_every_scale_is_valid(tmp_path, scale):
    out = tmp_path / "params.yaml"
    compose(out, [f"scale={scale}"], config_dir=ROOT / "conf")
    sections = config.load(*config.SECTIONS, path=out)
    assert sections["world"].categories >= 8


def test_folder_data_needs_its_videos_only(tmp_path):
    """`-S data=folder -S data.videos=...` as the README writes it: no separate data.root needed."""
    out = tmp_path / "params.yaml"
    compose(out, ["data=folder"], config_dir=ROOT / "conf")
    with pytest.raises(config.ConfigError, match=r"data: videos: not set"):
        config.load("data", path=out)
    compose(out, ["data=folder", "data.videos=/d/videos"], config_dir=ROOT / "conf")
    data = config.load("data", path=out)["data"]
    assert (data.videos, data.root) == ("/d/videos", "data/world")
