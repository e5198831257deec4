from pathlib import Path

import pytest
import video_fixtures

from demystify.video.probe import VideoError, ffmpeg_reason, probe

clips = video_fixtures.clips  # the session fixture, shared with other modules


def test_probe_good(clips):
    info = probe(clips["good"])
    assert (info.width, info.height, info.fps) == (64, 48, 25.0)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)


def test_probe_rotation_gives_display_size(clips):
    info = probe(clips["rotated"])
    assert (info.width, info.height) == (48, 64)


def test_audio_only_has_no_video_stream(clips):
    with pytest.raises(VideoError, match="no video stream"):
        probe(clips["audio"])


@pytest.mark.parametrize("content", [b"", b"hello, not a video\n"])
def test_junk_gives_ffmpegs_reason(tmp_path: Path, content: bytes):
    path = tmp_path / "junk.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError) as err:
        probe(path)
    assert "moov atom not found" in err.value.reason
    assert "Invalid data found when processing input" in err.value.reason


def test_truncated_header(clips):
    with pytest.raises(VideoError, match="moov atom not found"):
        probe(clips["truncated"])


def test_missing_file(tmp_path: Path):
    with pytest.raises(VideoError, match="No such file"):
        probe(tmp_path / "absent.mp4")


def test_reason_skips_bookkeeping():
    stderr = (
        "[in#0 @ 0x1] moov atom not found\n"
        "[in#0 @ 0x2] Error opening input: Invalid data found when processing input\n"
        "Error opening input file x.mp4.\n"
        "Error opening input files: Invalid data found when processing input\n"
        "[vf#0:0 @ 0x3] Task finished with error code: -1 (x)\n"
    )
    assert ffmpeg_reason(stderr) == "moov atom not found; Invalid data found when processing input"
    assert ffmpeg_reason("", default="nothing") == "nothing"


@pytest.mark.parametrize("name", ["good", "rotated"])
def test_opencv_probe_agrees_with_ffmpeg(clips, name):
    """The in-process OpenCV probe (used when there is no ffprobe) reads what ffmpeg reads."""
    from demystify.video.probe import _probe_ffmpeg, _probe_opencv

    assert _probe_opencv(clips[name]) == _probe_ffmpeg(clips[name])


def test_opencv_cannot_open_falls_back_to_ffmpegs_reason(clips):
    from demystify.video.probe import _probe_opencv

    assert _probe_opencv(clips["truncated"]) is None  # then probe() asks ffmpeg why
