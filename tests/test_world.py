"""The synthesize stage's output, read back through the public layouts' readers."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from demystify.checks import leakage
from demystify.core import config
from demystify.data import got10k
from demystify.video.probe import probe
from demystify.world.synthesize import synthesize

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_params(smoke_params_dir):
    root = smoke_params_dir("conf", "world.evaluation.aloi_instances_per_category=1")
    return config.load("world", path=root / "params.yaml")["world"]


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory, smoke_params):
    out = tmp_path_factory.mktemp("world") / "world"
    synthesize(smoke_params, out, progress=False)
    return out


def test_got10k_videos_read_back(world_dir, smoke_params):
    v = smoke_params.videos
    root = world_dir / "videos"
    names = got10k.read_split(root)
    assert len(names) == v.count
    for name in names:
        assert (root / f"{name}.mp4").stat().st_size > 0
        info = probe(root / f"{name}.mp4")
        assert (info.width, info.height) == (v.width, v.height)
        assert info.duration_s == pytest.approx(v.frames / v.fps, abs=1.5 / v.fps)
        ann = got10k.read_annotations(root / name)
        assert len(ann) == v.frames
        assert ann["cover"].between(0, 8).all()
        assert ((ann["absence"] == 1) == (ann["cover"] == 0)).all()
        meta = got10k.read_meta(root / name)
        assert meta["object_class"] in (world_dir / "categories.txt").read_text().split()
        assert got10k.anno_fps(meta) == v.fps
        objects = pd.read_csv(root / name / "objects.csv")
        target = objects[objects.track == 0].sort_values("frame")
        np.testing.assert_allclose(
            target[["x", "y", "w", "h"]].to_numpy(), ann[["x", "y", "w", "h"]].to_numpy(), atol=1e-3
        )
        visible = ann[ann.absence == 0]
        assert (
            (visible.w > 0).all()
            and (visible.x + visible.w <= v.width).all()
            and (visible.y + visible.h <= v.height).all()
        )


def test_aloi_layout(world_dir, smoke_params):
    root = world_dir / "eval" / "aloi"
    objects = pd.read_csv(root / "objects.csv")
    assert len(objects) == smoke_params.categories  # one per category at this scale
    views = 360 // smoke_params.evaluation.aloi_view_step_deg
    for o in objects.object:
        assert len(list((root / "aloi_red2_view" / "png2" / str(o)).glob(f"{o}_r*.png"))) == views
        assert (root / "aloi_red2_view" / "png2" / str(o) / f"{o}_r0.png").exists()
        assert len(list((root / "aloi_red2_ill" / "png2" / str(o)).glob(f"{o}_l*c*.png"))) == 24
        assert (root / "aloi_red2_ill" / "png2" / str(o) / f"{o}_l8c3.png").exists()
        assert len(list((root / "aloi_red2_col" / "png2" / str(o)).glob(f"{o}_i*.png"))) == 12
    img = cv2.imread(str(root / "aloi_red2_view" / "png2" / "1" / "1_r0.png"))
    assert img.shape == (smoke_params.image_size, smoke_params.image_size, 3)
    assert (img[0, 0] == 0).all()  # ALOI's black background


def test_occlusion_set_spans_cover_levels(world_dir, smoke_params):
    root = world_dir / "eval" / "got10k" / "train"
    for name in got10k.read_split(root):
        ann = got10k.read_annotations(root / name)
        assert len(ann) == smoke_params.evaluation.occlusion_frames
        assert len(list((root / name).glob("*.jpg"))) == len(ann)
        assert (root / name / "00000001.jpg").exists()
        # the paper keeps videos whose cover levels span at least 4: every synthetic one must qualify
        assert ann.cover.max() - ann.cover.min() >= 4


def test_scene_masks_agree_with_annotations(world_dir, smoke_params):
    root = world_dir / "corpora" / "scenes"
    ann = pd.read_csv(root / "annotations.csv")
    classes = (world_dir / "categories.txt").read_text().split()
    lo, hi = smoke_params.corpora.objects_per_scene
    assert ann.groupby("image").size().between(lo, hi).all()
    for image, objs in ann.groupby("image"):
        mask = cv2.imread(str(root / "masks" / Path(image).name), cv2.IMREAD_UNCHANGED)
        for cat, rows in objs.groupby("category"):
            # pixels of a category = the visible areas of its objects in that scene
            expected = int(round(rows.area_share.sum() * smoke_params.scene_size**2))
            assert (mask == classes.index(cat) + 1).sum() == expected


def test_object_centric_is_large_and_centred(world_dir, smoke_params):
    ann = pd.read_csv(world_dir / "corpora" / "object_centric" / "annotations.csv")
    scenes = pd.read_csv(world_dir / "corpora" / "scenes" / "annotations.csv")
    assert len(ann) == smoke_params.categories * smoke_params.corpora.object_centric_per_category
    assert ann.area_share.median() > 3 * scenes.groupby("image").area_share.max().median()
    size = smoke_params.image_size
    centre = np.hypot(ann.x + ann.w / 2 - size / 2, ann.y + ann.h / 2 - size / 2) / size
    assert centre.median() < 0.15
    crops = pd.read_csv(world_dir / "corpora" / "scene_crops" / "annotations.csv")
    assert len(crops) > 0 and all(
        (world_dir / "corpora" / "scene_crops" / p).exists() for p in crops.path
    )


def test_evaluation_splits(world_dir, smoke_params):
    e = smoke_params.evaluation
    cls = world_dir / "eval" / "classification"
    ann = pd.read_csv(cls / "annotations.csv")
    assert list(ann.columns) == ["path", "split", "category", "instance"]
    for split, per in (
        ("train", e.classification_train_per_class),
        ("val", e.classification_val_per_class),
        ("test", e.classification_test_per_class),
    ):
        folders = sorted(p for p in (cls / split).iterdir())
        assert len(folders) == smoke_params.categories
        assert all(len(list(f.glob("*.png"))) == per for f in folders)
        assert sorted(ann.path[ann.split == split]) == sorted(
            p.relative_to(cls).as_posix() for p in (cls / split).rglob("*.png")
        )
    catalog = pd.read_csv(world_dir / "catalog.csv").set_index("index")
    assert (catalog.loc[ann.instance, "category_name"].to_numpy() == ann.category.to_numpy()).all()
    labels = pd.read_csv(world_dir / "eval" / "pascal3d" / "labels.csv")
    assert (
        labels.groupby(["category", "az_bin", "el_bin"])
        .instance.nunique()
        .eq(e.instance_per_bin)
        .all()
    )
    assert ((labels.azimuth % 180) // 30 == labels.az_bin).all()
    assert ((labels.elevation % 90) // 30 == labels.el_bin).all()
    seg = world_dir / "eval" / "segmentation"
    assert len(list((seg / "train" / "masks").glob("*.png"))) == e.segmentation_train
    assert (seg / "classes.txt").read_text().split()[0] == "background"


def _instances_by_split(world_dir: Path) -> dict[str, set[int]]:
    ann = pd.read_csv(world_dir / "eval" / "classification" / "annotations.csv")
    return {split: set(group.instance) for split, group in ann.groupby("split")}


def test_val_split_is_disjoint_from_train_and_test(world_dir, smoke_params):
    by_split = _instances_by_split(world_dir)
    assert set(by_split) == {"train", "val", "test"}
    assert not by_split["val"] & by_split["test"] and not by_split["val"] & by_split["train"]
    assert not by_split["train"] & by_split["test"]
    # every category has its own instances in each split (smoke: 4 per category -> train 2, val 1, test 1)
    n = smoke_params.instances_per_category
    for split, local in smoke_params.instance_split().items():
        assert {i % n for i in by_split[split]} == set(local)


def test_no_test_instance_in_any_pretraining_source(world_dir, smoke_params):
    """Object-centric corpus (and supervised labels), scenes, scene crops and videos (targets and
    distractors; frames and pairs come from them) never show a classification test instance."""
    held_out = _instances_by_split(world_dir)["test"]
    assert len(held_out) == smoke_params.categories  # one test instance per category at this scale
    sources = leakage.pretraining_instances(world_dir / "corpora", world_dir / "videos")
    assert set(sources) == {"object_centric", "scenes", "scene_crops", "videos"}
    n_objects = smoke_params.categories * smoke_params.instances_per_category
    for name, table in sources.items():
        assert table.instance.notna().all(), name
        shown = set(table.instance.astype(int))
        assert shown and not shown & held_out, (name, sorted(shown & held_out))
        objects = {
            i for i in shown if i < n_objects
        }  # videos also show occluders (ids past the objects)
        assert objects <= set(range(n_objects)) and objects, name
    for seq in (world_dir / "videos").glob(
        "*/objects.csv"
    ):  # every track of every frame, not just the target
        assert not set(pd.read_csv(seq).instance) & held_out, seq


def test_claim2_corpora_have_equal_unique_images(world_dir, smoke_params):
    """Object-centric images, scenes and scene crops (one per scene: its largest visible object)."""
    corpora = world_dir / "corpora"
    object_centric = list((corpora / "object_centric").rglob("*.png"))
    scenes = list((corpora / "scenes" / "images").glob("*.png"))
    crops = list((corpora / "scene_crops").rglob("*.png"))
    expected = smoke_params.corpora.scenes
    assert len(object_centric) == len(scenes) == len(crops) == expected
    digests = [
        {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
        for files in (object_centric, scenes, crops)
    ]
    assert [len(d) for d in digests] == [expected] * 3  # unique images, not copies
    crop_ann = pd.read_csv(corpora / "scene_crops" / "annotations.csv")
    scene_ann = pd.read_csv(corpora / "scenes" / "annotations.csv")
    assert crop_ann.source.is_unique and len(crop_ann) == expected
    largest = scene_ann.loc[scene_ann.groupby("image").area_share.idxmax()].set_index("image")
    assert (largest.loc[crop_ann.source, "object"].to_numpy() == crop_ann.object.to_numpy()).all()
    assert (
        largest.loc[crop_ann.source, "instance"].to_numpy() == crop_ann.instance.to_numpy()
    ).all()


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes(world_dir, tmp_path, smoke_params):
    """The whole stage run again, over a second later, writes every file with the same bytes (the
    PASCAL3D+ .mat headers once carried their creation time)."""
    time.sleep(1.1)
    again = tmp_path / "world"
    synthesize(smoke_params, again, progress=False)
    first, second = _digest(world_dir), _digest(again)
    assert any(name.endswith(".mat") for name in first) and any(
        name.endswith(".mp4") for name in first
    )
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
