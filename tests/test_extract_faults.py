"""Faults of extract_frames that used to pass silently (issue 22): a full disk rejected good videos
as "Error muxing a packet" and exited 0; a video with a timestamp gap became thousands of copies of
one frame. Real ffmpeg throughout: the full disk is a frame file linked to /dev/full (every write
fails with ENOSPC), set up by a wrapper around the real binary, the one seam at the process boundary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import video_fixtures
from dvc_cmd import extract_frames_by_hand

from demystify.checks import suites
from demystify.core import config, ffmpeg_bin
from demystify.tools.params_file import compose
from demystify.video.extract import OutputError, extract_all, output_fault, run_stage

ROOT = Path(__file__).resolve().parents[1]
clips = video_fixtures.clips  # the session fixture, shared with other modules
frames_params, put = video_fixtures.frames_params, video_fixtures.put

ENOSPC_STDERR = """\
[vost#0:0/mjpeg @ 0x5644f7aaa2c0] Error submitting a packet to the muxer: No space left on device
    Last message repeated 1 times
[out#0/image2 @ 0x5644f7aa5ec0] Error muxing a packet
[out#0/image2 @ 0x5644f7aa5ec0] Task finished with error code: -28 (No space left on device)
"""


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """Call it to fill the disk: DEMYSTIFY_FFMPEG becomes the real ffmpeg, whose first frame file
    is first made a link to /dev/full."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    wrapper = tmp_path / "ffmpeg-full-disk.sh"
    wrapper.write_text(
        '#!/bin/sh\nfor last; do :; done\nln -s /dev/full "$(dirname "$last")/000000.jpg"\n'
        f'exec "{ffmpeg_bin.ffmpeg_exe()}" "$@"\n'
    )
    wrapper.chmod(0o755)

    def fill() -> None:
        monkeypatch.setenv("DEMYSTIFY_FFMPEG", str(wrapper))
        ffmpeg_bin.ffmpeg_exe.cache_clear()

    yield fill
    ffmpeg_bin.ffmpeg_exe.cache_clear()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _gap_clip(path: Path, gap_s: int = 60) -> Path:
    """2 s of testsrc2 at 25 fps whose second half starts `gap_s` later (a dashcam's jump)."""
    return video_fixtures.make_clip(
        path, 2, 25, "64x48", "-vf", f"setpts=PTS+{gap_s}/TB*gte(N\\,25)"
    )


# ---------------------------------------------------------------- the output side


def test_full_disk_stops_the_stage_and_rejects_nothing(clips, tmp_path, full_disk):
    videos, out = tmp_path / "videos", tmp_path / "frames"
    for name in ("a", "b"):
        put(clips["good"], videos / f"{name}.mp4")

    def extract():
        return run_stage(
            videos_root=videos,
            out_root=out,
            metrics_path=tmp_path / "m.json",
            params=frames_params(),
            workers=1,
        )

    extract()
    before = _snapshot(out)
    assert "a.zip" in before and "b.zip" in before

    full_disk()
    put(clips["good"], videos / "c.mp4")
    with pytest.raises(OutputError, match="No space left on device") as err:
        extract()
    assert "while extracting a.mp4" in str(err.value) and "\n" not in str(err.value)
    # Nothing was rejected, and the earlier run's frames, manifest and rejected.csv are all there.
    assert _snapshot(out) == before
    assert pd.read_csv(out / "rejected.csv").empty
    assert sorted(pd.read_parquet(out / "manifest.parquet")["video"].unique()) == ["a", "b"]


def test_full_disk_stage_script_exits_1_with_one_line(clips, tmp_path, full_disk):
    """The stage as DVC runs it, two workers: exit 1, one line naming the cause, no rejected.csv."""
    for name in ("a", "b", "c"):
        put(clips["good"], tmp_path / "videos" / f"{name}.mp4")
    full_disk()
    (tmp_path / "params.yaml").write_text(
        "data: {source: folder, root: data/world, videos: videos}\n"
        "frames: {fps: 5.0, size: 32, jpeg_quality: 5, max_rejected: 0.5, decode_timeout_s: 60.0,"
        " max_duplicate_share: 0.5}\n"
    )
    (tmp_path / "machine.yaml").write_text("frames: {workers: 2}\n")  # read from the stage's folder
    proc = extract_frames_by_hand(tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "extract_frames: cannot write frames to data/frames: No space left on device"
    ), proc.stderr
    assert not (tmp_path / "data/frames/rejected.csv").exists()
    assert not (tmp_path / "results/frames/metrics.json").exists()
    assert (
        sorted(p.name for p in (tmp_path / "data/frames").iterdir()) == []
    )  # no temporary left either
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["a.mp4", "b.mp4", "c.mp4"]


def test_output_fault_reads_ffmpeg_and_the_folder(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    assert output_fault(ENOSPC_STDERR, folder) == "No space left on device"
    assert (
        output_fault("[out#0/image2 @ 0x1] Error muxing a packet\n", folder)
        == "Error muxing a packet"
    )
    denied = (
        "[image2 @ 0x1] Could not open file : /x/000000.jpg\n"
        "[vost#0:0/mjpeg @ 0x2] Error submitting a packet to the muxer: Permission denied\n"
    )
    assert output_fault(denied, folder) == "Permission denied"
    for cause in ("Read-only file system", "Disk quota exceeded", "File too large"):
        assert (
            output_fault(
                f"[out#0/image2 @ 0x1] Task finished with error code: -30 ({cause})\n", folder
            )
            == cause
        )
    # The video's faults stay the video's.
    for stderr in (
        "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x1] moov atom not found\nInvalid data found when processing input\n",
        "[h264 @ 0x1] corrupt input packet in stream 0\n",
        "",
    ):
        assert output_fault(stderr, folder) is None
    # A folder that takes no write is the cause, whatever ffmpeg said.
    assert (
        output_fault("[h264 @ 0x1] corrupt input packet in stream 0\n", tmp_path / "gone")
        == "No such file or directory"
    )
    assert sorted(folder.iterdir()) == []  # the probe leaves nothing behind


# ---------------------------------------------------------------- repeated frames


def test_timestamp_gap_rejects_the_video_by_name(clips, tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "frames"
    put(clips["good"], videos / "good.mp4")
    _gap_clip(videos / "gap.mp4")
    out.mkdir(parents=True)  # an older run's frames of it must not outlive the rejection
    (out / "gap.zip").write_bytes(b"old")
    metrics = run_stage(
        videos_root=videos,
        out_root=out,
        metrics_path=tmp_path / "m.json",
        params=frames_params(max_rejected=0.5),
        workers=1,
    )
    rejected = pd.read_csv(out / "rejected.csv")
    assert rejected["file"].tolist() == ["gap.mp4"]
    reason = rejected["reason"].iloc[0]
    assert reason.startswith(
        "mostly repeated frames: 299 of 310 (96.5%) equal the frame before "
        "(> frames.max_duplicate_share 0.5); longest run 59.8 s from 1.0 s"
    ), reason
    assert not (out / "gap.zip").exists() and (out / "good.zip").is_file()
    manifest = pd.read_parquet(
        out / "manifest.parquet"
    )  # the good video is all there, nothing flagged
    assert manifest["video"].unique().tolist() == ["good"] and len(manifest) == 10
    assert not manifest["duplicate"].any()
    assert (metrics["videos_rejected"], metrics["duplicate_frames"]) == (1, 0)
    assert json.loads((tmp_path / "m.json").read_text())["frames"] == 10


def test_duplicates_are_flagged_below_the_threshold(tmp_path):
    """Accepted with max_duplicate_share 1: every repeated frame is flagged in the manifest."""
    _gap_clip(tmp_path / "videos" / "gap.mp4", gap_s=4)
    manifest, rejected = extract_all(
        tmp_path / "videos",
        tmp_path / "frames",
        frames_params(max_duplicate_share=1.0),
        progress=False,
        workers=1,
    )
    assert rejected.empty and len(manifest) == 30
    assert (
        manifest["duplicate"].sum() == 19
    )  # 30 frames, 11 distinct: the gap's 20 slots hold one frame
    assert not manifest["duplicate"].iloc[0]


def test_duplicate_share_param_is_validated():
    base = frames_params().model_dump()
    assert base["max_duplicate_share"] == 0.5
    with pytest.raises(config.ConfigError, match=r"frames\.max_duplicate_share"):
        config.validate({"frames": {**base, "max_duplicate_share": 1.5}}, "frames")
    assert config.load("frames", path=ROOT / "params.yaml")["frames"].max_duplicate_share == 0.5


# ---------------------------------------------------------------- the world and check_data


@pytest.fixture(scope="module")
def world_frames(tmp_path_factory):
    """Two videos of the default world (params.yaml's world and frames), extracted."""
    d = tmp_path_factory.mktemp("world_frames")
    compose(d / "params.yaml", ["world.videos.count=2"], config_dir=ROOT / "conf")
    p = config.load("world", "frames", path=d / "params.yaml")
    from demystify.world.synthesize import World, write_videos

    write_videos(World(p["world"]), d, progress=False)
    manifest, rejected = extract_all(
        d / "videos", d / "frames", p["frames"], progress=False, workers=1
    )
    return p["frames"], manifest, rejected, d / "frames"


def test_world_videos_pass_with_no_repeated_frame(world_frames):
    frames, manifest, rejected, root = world_frames
    assert rejected.empty
    assert manifest["video"].nunique() == 2 and not manifest["duplicate"].any()
    outcome = suites.frames_manifest(suites.Validator(), manifest, root, frames)
    assert outcome.success, [str(f) for f in outcome.failures]


def test_check_data_fails_on_repeated_frames(world_frames):
    frames, manifest, _, root = world_frames
    repeated = manifest.copy()
    first = repeated["video"] == repeated["video"].iloc[0]
    repeated.loc[first & (repeated["frame"] > 0), "duplicate"] = True
    failures = [
        str(f) for f in suites.frames_manifest(suites.Validator(), repeated, root, frames).failures
    ]
    assert (
        len(failures) == 1
        and "expect_column_values_to_be_between on column 'duplicate_share'" in failures[0]
    )
    older = manifest.drop(columns="duplicate")  # a manifest from before the flag
    failures = [
        str(f) for f in suites.frames_manifest(suites.Validator(), older, root, frames).failures
    ]
    assert (
        len(failures) == 1
        and "expect_column_values_to_not_be_null on column 'duplicate_share'" in failures[0]
    )
