"""check_data: real great-expectations validation on a small synthetic world."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from demystify.checks import centricity
from demystify.checks.stage import CheckError, CheckParams, CheckPaths, run_stage
from demystify.core import config
from demystify.core.gate import GateError, require_passed
from demystify.pairs.mine import mine_all
from demystify.video.extract import extract_all
from demystify.world.synthesize import World, synthesize, write_object_centric

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(smoke_params_dir):
    """A smoke-scale world, its frames and pairs: (params, data root, frames root, pairs path)."""
    root = smoke_params_dir(
        "checks",
        "world.evaluation.aloi_instances_per_category=1",
        "world.corpora.object_centric_per_category=6",
        "world.corpora.scenes=48",
    )
    p = config.load("world", "frames", "pairs", "checks", "pretrain", path=root / "params.yaml")
    synthesize(p["world"], root / "world", progress=False)
    manifest, _ = extract_all(
        root / "world" / "videos", root / "frames", p["frames"], progress=False, workers=1
    )
    manifest.to_parquet(root / "frames" / "manifest.parquet")
    pairs, _ = mine_all(
        manifest, root / "frames", root / "world" / "videos", p["pairs"], progress=False, workers=1
    )
    pairs.to_parquet(root / "pairs.parquet")
    return p, root


def _run(
    p,
    root: Path,
    out: Path,
    frames_root: Path | None = None,
    pairs_path: Path | None = None,
    checks=None,
    corpora_root: Path | None = None,
    data_source: str = "synthetic",
):
    paths = CheckPaths.of(
        frames_root=frames_root or root / "frames",
        pairs_path=pairs_path or root / "pairs.parquet",
        corpora_root=corpora_root or root / "world" / "corpora",
        videos_root=root / "world" / "videos",
        classification_annotations=root / "world" / "eval" / "classification" / "annotations.csv",
        out_dir=out,
    )
    params = CheckParams(
        checks=checks or p["checks"],
        frames=p["frames"],
        pairs=p["pairs"],
        world=p["world"],
        data_source=data_source,
        image_size=p["pretrain"].image_size,
    )
    return run_stage(paths, params)


def test_verdicts_on_the_synthetic_world(world, tmp_path, capfd):
    p, root = world
    summary = _run(p, root, tmp_path)
    corpora = summary["corpora"]
    assert corpora["object_centric"]["object_centric"] is True
    assert corpora["scenes"]["object_centric"] is False
    crops = corpora["scene_crops"]
    assert crops["object_centric"] or (
        corpora["scenes"]["largest_share_median"] < crops["largest_share_median"]
    )  # between, or object-centric
    assert corpora["scenes"]["objects_median"] > corpora["object_centric"]["objects_median"] == 1
    assert summary["suites"]["frames_manifest"] and summary["suites"]["pairs_manifest"]
    # no classification test instance in any pretraining source; disjoint classification splits
    leak = {name: ok for name, ok in summary["suites"].items() if name.startswith("leakage_")}
    assert leak == {
        f"leakage_{s}": True
        for s in ("classification_splits", "object_centric", "scenes", "scene_crops", "videos")
    }
    assert "leakage" in p["checks"].fail_on and "skipped" not in summary
    # claim 2's corpora: equal unique images; object sizes as pretraining sees them
    assert summary["claim2_equal_images"] is True
    assert {corpora[c]["unique_images"] for c in ("object_centric", "scenes", "scene_crops")} == {
        48
    }
    size = p["pretrain"].image_size
    for c in corpora.values():
        assert 0 <= c["object_side_px_median"] <= size
        assert c["object_side_px_median"] == pytest.approx(
            np.sqrt(c["largest_share_median"]) * size, rel=0.3
        )
    assert (
        corpora["object_centric"]["object_side_px_median"]
        > 2 * corpora["scenes"]["object_side_px_median"]
    )
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    validations = json.loads((tmp_path / "validations.json").read_text())
    assert set(validations) == set(summary["suites"])
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "centricity_scenes" in page and "FAIL" in page
    printed = capfd.readouterr()
    assert "Calculating Metrics" not in printed.err + printed.out  # no GX progress bars
    assert json.loads((tmp_path / "gate.json").read_text()) == {"passed": True, "failures": []}
    _run(
        p, root, tmp_path / "again"
    )  # the same inputs give the same bytes (no run ids, UUIDs, times)
    for name in ("summary.json", "validations.json", "report.html", "gate.json"):
        assert (tmp_path / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def _corrupt_and_expect(world, tmp_path, table: str, change, expected: str):
    p, root = world
    frames_root, pairs_path = root / "frames", root / "pairs.parquet"
    if table == "manifest":
        frames_root = tmp_path / "frames"
        frames_root.mkdir()
        for video in (root / "frames").iterdir():
            if video.suffix == ".zip":  # each video's frames zip
                (frames_root / video.name).symlink_to(video)
        manifest = pd.read_parquet(root / "frames" / "manifest.parquet")
        change(manifest)
        manifest.to_parquet(frames_root / "manifest.parquet")
    else:
        pairs = pd.read_parquet(root / "pairs.parquet")
        change(pairs)
        pairs_path = tmp_path / "pairs.parquet"
        pairs.to_parquet(pairs_path)
    with pytest.raises(CheckError) as err:
        _run(p, root, tmp_path / "out", frames_root, pairs_path)
    assert expected in str(err.value)
    assert (tmp_path / "out" / "summary.json").is_file()  # results are written before stopping


def test_null_path_fails_frames_suite(world, tmp_path):
    def change(m):
        m.loc[3, "path"] = None

    _corrupt_and_expect(
        world,
        tmp_path,
        "manifest",
        change,
        "frames_manifest: expect_column_values_to_not_be_null on column 'path' failed (observed: 1 of",
    )


def test_missing_file_fails_frames_suite(world, tmp_path):
    def change(m):
        m.loc[0, "path"] = "nowhere/000000.jpg"

    _corrupt_and_expect(
        world, tmp_path, "manifest", change, "column 'file_exists' failed (observed: 1 of"
    )


def test_unordered_frames_fail_frames_suite(world, tmp_path):
    def change(m):
        m.loc[[1, 2], "frame"] = m.loc[[2, 1], "frame"].to_numpy()

    _corrupt_and_expect(
        world, tmp_path, "manifest", change, "column 'frame_step' failed (observed: 1 of"
    )


def test_box_outside_frame_fails_pairs_suite(world, tmp_path):
    def change(pairs):
        pairs.loc[0, "b_x"] = 500.0

    _corrupt_and_expect(
        world,
        tmp_path,
        "pairs",
        change,
        "pairs_manifest: expect_column_values_to_be_between on column 'b_overflow'",
    )


def test_negative_gap_fails_pairs_suite(world, tmp_path):
    def change(pairs):
        pairs.loc[0, "gap"] = -3

    _corrupt_and_expect(world, tmp_path, "pairs", change, "column 'gap' failed (observed: 1 of")


def test_fail_on_decides_what_stops(world, tmp_path):
    p, root = world
    strict = p["checks"].model_copy(
        update={"fail_on": ["frames_manifest", "pairs_manifest", "centricity"]}
    )
    with pytest.raises(
        CheckError,
        match=r"centricity_scenes: expect_column_median_to_be_between on column 'objects'",
    ):
        _run(p, root, tmp_path, checks=strict)
    with pytest.raises(GateError, match="centricity_scenes"):  # what every training stage reads
        require_passed(tmp_path / "gate.json")
    lenient = p["checks"].model_copy(update={"fail_on": []})
    assert _run(p, root, tmp_path, checks=lenient)["corpora"]["scenes"]["object_centric"] is False
    require_passed(tmp_path / "gate.json")


def _leaking_corpora(world, tmp_path: Path) -> Path:
    """The world's corpora, but the object-centric corpus rebuilt by the generator with the
    classification test instances allowed (World(holdout=False), as before issue 21)."""
    p, root = world
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    for name in ("scenes", "scene_crops"):
        (corpora / name).symlink_to(root / "world" / "corpora" / name)
    write_object_centric(World(p["world"], holdout=False), tmp_path / "leaking", progress=False)
    (corpora / "object_centric").symlink_to(tmp_path / "leaking" / "corpora" / "object_centric")
    return corpora


def test_leakage_fails_on_a_world_with_test_instances_in_training(world, tmp_path):
    p, root = world
    corpora = _leaking_corpora(world, tmp_path)
    with pytest.raises(CheckError) as err:  # leakage is in the default checks.fail_on
        _run(p, root, tmp_path / "out", corpora_root=corpora)
    assert (
        "leakage_object_centric: expect_column_values_to_not_be_in_set on column 'instance' failed (observed: "
        in str(err.value)
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["suites"]["leakage_object_centric"] is False
    assert summary["suites"]["leakage_scenes"] and summary["suites"]["leakage_videos"]
    with pytest.raises(GateError, match="leakage_object_centric"):  # so no variant trains on it
        require_passed(tmp_path / "out" / "gate.json")
    # the leaked rows are the held-out instances, named in the observed value
    held_out = set(
        pd.read_csv(root / "world" / "eval" / "classification" / "annotations.csv")
        .query("split == 'test'")
        .instance
    )
    leaked = set(pd.read_csv(corpora / "object_centric" / "annotations.csv").instance) & held_out
    assert leaked and any(str(i) in str(err.value) for i in leaked)


def test_leakage_fails_on_a_corpus_row_with_a_test_instance(world, tmp_path):
    """A scene crop whose annotations name a test instance (or no instance at all) fails."""
    p, root = world
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    for name in ("scenes", "object_centric"):
        (corpora / name).symlink_to(root / "world" / "corpora" / name)
    (corpora / "scene_crops").mkdir()
    crops = pd.read_csv(root / "world" / "corpora" / "scene_crops" / "annotations.csv")
    held_out = pd.read_csv(root / "world" / "eval" / "classification" / "annotations.csv").query(
        "split == 'test'"
    )
    crops.loc[0, "instance"] = int(held_out.instance.iloc[0])
    crops.to_csv(corpora / "scene_crops" / "annotations.csv", index=False)
    with pytest.raises(
        CheckError, match=r"leakage_scene_crops: expect_column_values_to_not_be_in_set"
    ):
        _run(p, root, tmp_path / "out", corpora_root=corpora)
    crops.drop(columns="instance").to_csv(corpora / "scene_crops" / "annotations.csv", index=False)
    with pytest.raises(
        CheckError,
        match=r"leakage_scene_crops: expect_column_values_to_not_be_null on column 'instance'",
    ):
        _run(p, root, tmp_path / "out", corpora_root=corpora)


def test_leakage_is_skipped_for_folder_data(world, tmp_path):
    """data=folder: videos of your own carry no world instance ids; the check is skipped with a note."""
    p, root = world
    summary = _run(
        p,
        root,
        tmp_path / "out",
        corpora_root=_leaking_corpora(world, tmp_path),
        data_source="folder",
    )
    assert not any(name.startswith("leakage_") for name in summary["suites"])
    assert summary["skipped"]["leakage"].startswith("skipped: data.source is folder")
    assert "data.source is folder" in (tmp_path / "out" / "report.html").read_text()
    require_passed(tmp_path / "out" / "gate.json")


def test_unknown_suite_in_fail_on_is_rejected():
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    bad = copy.deepcopy(data)
    bad["checks"]["fail_on"] = ["frames_manifest", "everything"]
    with pytest.raises(config.ConfigError, match=r"checks\.fail_on\.1 = 'everything'"):
        config.validate(bad, "checks")


def test_measures():
    n, share, offset = centricity._measure(
        np.array([[16, 16, 32, 32], [0, 0, 4, 4]], float), 64, 64
    )
    assert (n, share, offset) == (2, 0.25, 0.0)
    n, share, offset = centricity._measure(
        np.array([[48, 48, 32, 32]], float), 64, 64
    )  # clipped to the image
    assert n == 1 and share == pytest.approx(16 * 16 / 64**2) and offset == pytest.approx(0.75)
    assert centricity._measure(np.zeros((0, 4)), 64, 64) == (0, 0.0, 1.0)


def _pair_crops_per_video_masks(pairs, manifest, videos_root):
    """pair_crops as it was: a mask over the whole manifest and one over the tracks per pair."""
    from demystify.pairs import ground_truth

    rows = []
    for video, mine in pairs.groupby("video", sort=True):
        tracks = ground_truth.load_tracks(manifest[manifest.video == video], videos_root)
        for r in mine.itertuples():
            crop = np.array([r.a_x, r.a_y, r.a_w, r.a_h], float)
            _, boxes = ground_truth.boxes_at(tracks, r.frame_a)
            if r.source == "frames" or r.track < 0 or len(boxes) == 0:
                rows.append(
                    ("pair_crops", f"{video}/{r.frame_a}:{r.Index}", 1, 1.0, 0.0, "tracked box")
                )
                continue
            local = boxes - np.array([crop[0], crop[1], 0, 0])
            inside = centricity._inside_share(local, crop[2], crop[3]) >= 0.5
            rows.append(
                (
                    "pair_crops",
                    f"{video}/{r.frame_a}:{r.Index}",
                    *centricity._measure(local[inside], crop[2], crop[3]),
                    "boxes",
                )
            )
    return pd.DataFrame(rows, columns=centricity.COLUMNS)


def test_grouped_pass_measures_what_the_per_video_masks_did(world):
    """check_data's per-video work is one grouped pass now (tracks once per video, boxes by frame): the
    measures are those of the per-video masks, with and without the world's objects.csv."""
    _, root = world
    manifest, pairs = (
        pd.read_parquet(root / "frames" / "manifest.parquet"),
        pd.read_parquet(root / "pairs.parquet"),
    )
    for videos_root in (root / "world" / "videos", None):
        grouped = centricity.pair_crops(pairs, manifest, videos_root)
        assert len(grouped) == len(pairs) > 0
        pd.testing.assert_frame_equal(
            grouped, _pair_crops_per_video_masks(pairs, manifest, videos_root)
        )
    tracks = centricity.video_tracks(manifest, root / "world" / "videos")
    assert sorted(tracks) == sorted(manifest["video"].unique())
    pd.testing.assert_frame_equal(
        centricity.video_frames(manifest, root / "world" / "videos", pairs, tracks),
        centricity.video_frames(manifest, root / "world" / "videos", pairs),
    )
