"""The frames store: zipped frames read bit-identically to the JPEGs ffmpeg wrote, by every reader."""

from __future__ import annotations

import shutil
import zipfile

import cv2
import numpy as np
import pandas as pd
import pytest
import video_fixtures
from video_fixtures import put, stored_frames

from demystify.core import frames_store
from demystify.core.frames_store import FramesError, FrameStore, read_manifest
from demystify.core.images import decode_rgb, image_size
from demystify.core.io import file_md5
from demystify.pairs.mine import Frames, with_frame_hashes
from demystify.ssl.datasets import DataError, image_items, pair_items
from demystify.video.extract import extract_all, extract_video

clips = video_fixtures.clips


@pytest.fixture(scope="module")
def zipped(clips, tmp_path_factory):
    """Two videos (one nested) extracted to zips, and the same decode as loose files."""
    d = tmp_path_factory.mktemp("store")
    put(clips["good"], d / "videos" / "a.mp4")
    put(clips["portrait"], d / "videos" / "sub" / "b.mp4")
    params = video_fixtures.frames_params()
    manifest, rejected = extract_all(d / "videos", d / "frames", params, progress=False, workers=1)
    assert rejected.empty
    manifest.to_parquet(d / "frames" / "manifest.parquet")  # as run_stage writes it
    for vid in ("a", "sub/b"):  # ffmpeg's own files, for comparison
        extract_video(d / "videos" / f"{vid}.mp4", d / "loose" / vid, params)
    return d, manifest


def test_zips_hold_ffmpegs_bytes_stored(zipped):
    d, manifest = zipped
    frames = stored_frames(d / "frames")
    assert list(frames) == manifest["path"].tolist()  # every frame of the manifest, nothing else
    for frame, data in frames.items():
        assert data == (d / "loose" / frame).read_bytes()
    with zipfile.ZipFile(d / "frames" / "sub" / "b.zip") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}


def test_every_reader_reads_the_same_pixels_and_md5(zipped):
    d, manifest = zipped
    store = FrameStore(d / "frames")
    for frame in manifest["path"].iloc[[0, 5, -1]]:
        loose = d / "loose" / frame
        address = store.address(frame)
        assert address.endswith(".zip/" + frame.rsplit("/", 1)[1])
        assert store.md5(frame) == file_md5(loose)
        assert np.array_equal(
            decode_rgb(address).numpy(), decode_rgb(loose).numpy()
        )  # training, evaluation
        assert image_size(address) == image_size(loose)
        frames = Frames(d / "frames", [frame])  # mine_pairs
        assert np.array_equal(frames[0], cv2.imread(str(loose)))


def test_pairs_keep_their_addresses_and_hashes(zipped):
    d, manifest = zipped
    pairs = pd.DataFrame({"video": ["a"], "path_a": ["a/000001.jpg"], "path_b": ["a/000003.jpg"]})
    hashed = with_frame_hashes(pairs, d / "frames")
    assert hashed["md5_a"][0] == file_md5(d / "loose" / "a/000001.jpg")
    path = d / "pairs.parquet"
    hashed.to_parquet(path)
    (item,) = pair_items(path, d / "frames", crops=False)
    assert np.array_equal(
        decode_rgb(item.path_b).numpy(), decode_rgb(d / "loose" / "a/000003.jpg").numpy()
    )
    # a frame whose bytes changed since mining is still refused, by name
    hashed.assign(md5_b="0" * 32).to_parquet(path)
    with pytest.raises(
        DataError, match=r"1 frame\(s\) changed since the pairs were mined, e.g. a/000003.jpg"
    ):
        pair_items(path, d / "frames", crops=False)
    hashed.assign(path_b="a/000999.jpg").to_parquet(path)
    with pytest.raises(DataError, match="1 frame.s. it points at are missing under .*a/000999.jpg"):
        pair_items(path, d / "frames", crops=False)


def test_frames_folder_as_an_image_corpus(zipped):
    d, manifest = zipped
    items, _ = image_items(d / "frames")  # the moco_frames variant
    assert len(items) == len(manifest)
    first = items[0].path_a
    assert np.array_equal(
        decode_rgb(first).numpy(), decode_rgb(d / "loose" / "a/000000.jpg").numpy()
    )


def test_a_missing_member_or_zip_is_named(zipped, tmp_path):
    d, _ = zipped
    store = FrameStore(d / "frames")
    with pytest.raises(FramesError, match="no frame 000999.jpg in .*a.zip"):
        store.read("a/000999.jpg")
    with pytest.raises(FramesError, match="nowhere/000000.jpg: cannot read frame"):
        store.read("nowhere/000000.jpg")
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(FramesError, match="x.zip: cannot open frames zip"):
        frames_store.read_bytes(f"{bad}/000000.jpg")
    assert store.exists("a/000000.jpg") and not store.exists("a/000999.jpg")


def test_shard_of_is_stable_and_spreads():
    ids = [f"GOT-10k_Train_{i:06d}" for i in range(2000)]
    shards = [frames_store.shard_of(v, 20) for v in ids]
    assert shards == [frames_store.shard_of(v, 20) for v in ids]  # a pure function of the id
    counts = np.bincount(shards, minlength=20)
    assert counts.min() > 60 and counts.max() < 140  # about 100 each


def test_shards_must_be_0_to_n_minus_1():
    with pytest.raises(
        ValueError, match=r"shards \[0, 2\] must be 0, 1, ..., n-1 in order \(n = 2\)"
    ):
        video_fixtures.frames_params(shards=[0, 2])
    assert video_fixtures.frames_params(shards=[0, 1, 2]).shards == [
        0,
        1,
        2,
    ]  # and the default: one shard
    assert video_fixtures.frames_params().shards == [0]


def test_leftovers_remove_shards_no_longer_in_params(tmp_path):
    """`make run` first: shards of an earlier (larger) frames.shards and the unsharded layout's files go,
    the current shards and DVC's .gitignore stay, and a variant folder is judged as before."""
    from demystify.tools.leftovers import prune

    for rel in [
        "data/frames/shard-0/a.zip",
        "data/frames/shard-1/b.zip",
        "data/frames/shard-2/c.zip",
        "data/frames/old_video/000000.jpg",
        "data/frames/manifest.parquet",
        "results/frames/metrics.json",
        "results/frames/shard-0/metrics.json",
        "results/frames/shard-2/metrics.json",
        "results/pretrain/gone/summary.json",
        "results/pretrain/kept/summary.json",
        "data/shards/shard-0.csv",
        "data/shards/shard-2.csv",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "data/frames/.gitignore").write_text("/shard-0\n/shard-1\n/shard-2\n")
    removed = prune(tmp_path, ["kept"], shards=[0, 1])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == [
        "data/frames/manifest.parquet",
        "data/frames/old_video",
        "data/frames/shard-2",
        "data/shards/shard-2.csv",
        "results/frames/metrics.json",
        "results/frames/shard-2",
        "results/pretrain/gone",
    ]
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == [
        "data/frames/.gitignore",
        "data/frames/shard-0/a.zip",
        "data/frames/shard-1/b.zip",
        "data/shards/shard-0.csv",
        "results/frames/shard-0/metrics.json",
        "results/pretrain/kept/summary.json",
    ]
    assert (tmp_path / "data/frames/.gitignore").read_text() == "/shard-0\n/shard-1\n"


def test_a_video_left_in_an_older_shard_folder_is_refused_by_name(zipped, tmp_path):
    """frames.shards shrunk and a plain `dvc repro` run: the removed shard's folder still holds its
    videos, now also in their new shard; counted twice they would weigh double, so readers refuse."""
    d, manifest = zipped
    root = tmp_path / "frames"
    for shard in ("shard-0", "shard-1"):  # the same video in both: one of them is a leftover
        (root / shard).mkdir(parents=True)
        shutil.copy(d / "frames" / "a.zip", root / shard / "a.zip")
        manifest[manifest["video"] == "a"].to_parquet(root / shard / "manifest.parquet")
    for read in (lambda: read_manifest(root), lambda: FrameStore(root).frame_addresses()):
        with pytest.raises(
            FramesError, match=r"1 video\(s\) in more than one shard folder \(first: a\).*leftovers"
        ):
            read()
    shutil.rmtree(root / "shard-1")  # what `python -m demystify.tools.leftovers` does
    assert len(read_manifest(root)) == (manifest["video"] == "a").sum()
    assert [f for f, _ in FrameStore(root).frame_addresses()] == manifest.loc[
        manifest["video"] == "a", "path"
    ].tolist()
