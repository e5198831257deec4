"""Probe a video's display size, frame rate and duration.

ffprobe's JSON when a system ffprobe exists; otherwise OpenCV's bundled FFmpeg, in process
(about 1 ms a file against 14 ms for starting ffmpeg, which matters for many short clips);
and for a file OpenCV cannot open, the stderr of `ffmpeg -i` from the imageio-ffmpeg wheel,
which names ffmpeg's reason (so a fresh machine needs no system ffmpeg at all).
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from demystify.core.ffmpeg_bin import ffmpeg_exe, ffprobe_exe


class VideoError(RuntimeError):
    """A video ffmpeg cannot use; the message is ffmpeg's own reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    width: int  # display size: rotation metadata already applied, as ffmpeg decodes it
    height: int
    fps: float
    duration_s: float | None  # None when the container does not say


# ffmpeg's bookkeeping around an error, never the error itself.
_NOISE = (
    "Task finished with error code",
    "Terminating thread with return code",
    "Could not open encoder before EOF",
    "Nothing was written into output file",
    "Cannot determine format of input",
    "Error opening input file ",
    "Error opening input files",
    "Error opening output file",
    "Conversion failed",
    "misdetection possible",
    "At least one output file must be specified",
)
_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")


def ffmpeg_reason(stderr: str, default: str = "ffmpeg failed") -> str:
    """The last two distinct meaningful lines of ffmpeg's stderr, e.g.
    'moov atom not found; Invalid data found when processing input'."""
    lines: list[str] = []
    for raw in stderr.splitlines():
        line = _PREFIX.sub("", raw.strip()).removeprefix("Error opening input: ").strip()
        if not line or any(n in line for n in _NOISE) or line in lines:
            continue
        lines.append(line)
    return "; ".join(lines[-2:]) or default


def probe(path: str | Path) -> VideoInfo:
    """Display size, frame rate and duration of the first video stream of `path`."""
    ffprobe = ffprobe_exe()
    if ffprobe:
        return _probe_ffprobe(Path(path), ffprobe)
    return _probe_opencv(Path(path)) or _probe_ffmpeg(Path(path))


def _probe_opencv(path: Path) -> VideoInfo | None:
    """None when OpenCV cannot read the file (the caller then asks ffmpeg for its reason)."""
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            return None
        width, height = (
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        fps, count = cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_COUNT)
        # With auto-orientation on (OpenCV's default) the size is already the display size.
        rotation = (
            0.0
            if cap.get(cv2.CAP_PROP_ORIENTATION_AUTO)
            else cap.get(cv2.CAP_PROP_ORIENTATION_META)
        )
    finally:
        cap.release()
    if width <= 0 or height <= 0 or not fps or not math.isfinite(fps) or fps <= 0:
        return None
    duration = count / fps if count and count > 0 else None
    return _info(width, height, fps, duration, rotation)


def _probe_ffprobe(path: Path, cmd: str) -> VideoInfo:
    import ffmpeg

    try:
        info = ffmpeg.probe(str(path), cmd=cmd)
    except ffmpeg.Error as exc:
        raise VideoError(ffmpeg_reason(exc.stderr.decode(errors="replace"))) from None
    video = next((s for s in info.get("streams", []) if s.get("codec_type") == "video"), None)
    if video is None:
        raise VideoError("no video stream")
    rotation = next(
        (float(d["rotation"]) for d in video.get("side_data_list", []) if "rotation" in d),
        float(video.get("tags", {}).get("rotate", 0)),
    )
    fps = _ratio(video.get("avg_frame_rate")) or _ratio(video.get("r_frame_rate"))
    duration = video.get("duration") or info.get("format", {}).get("duration")
    return _info(int(video["width"]), int(video["height"]), fps, duration, rotation)


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_SIZE = re.compile(r"[ ,](\d+)x(\d+)(?=[ ,\[]|$)")
_RATE = re.compile(r"([\d.]+)(k?) (fps|tbr)\b")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees", re.IGNORECASE)


def _probe_ffmpeg(path: Path) -> VideoInfo:
    # `ffmpeg -i` with no output always exits 1; the stream listing on stderr is the answer.
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
    )
    text = proc.stderr
    lines = text.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if "Stream #" in line and "Video:" in line), None
    )
    if start is None:
        if "Input #" in text:
            raise VideoError("no video stream")
        raise VideoError(ffmpeg_reason(text, default="not a video"))
    stream = lines[start]
    size = _SIZE.search(stream.split("Video:", 1)[1])
    if size is None:
        raise VideoError(f"no frame size in ffmpeg's stream line: {stream.strip()}")
    rates = {unit: float(v) * (1000 if k else 1) for v, k, unit in _RATE.findall(stream)}
    # Side data (rotation) sits under the stream line, up to the next stream.
    block = []
    for line in lines[start + 1 :]:
        if "Stream #" in line:
            break
        block.append(line)
    rot = _ROTATION.search("\n".join(block))
    dur = _DURATION.search(text)
    duration = int(dur[1]) * 3600 + int(dur[2]) * 60 + float(dur[3]) if dur else None
    fps = rates.get("fps") or rates.get("tbr") or 0.0
    return _info(int(size[1]), int(size[2]), fps, duration, float(rot[1]) if rot else 0.0)


def _info(width: int, height: int, fps: float, duration, rotation: float) -> VideoInfo:
    if width <= 0 or height <= 0:
        raise VideoError(f"invalid frame size {width}x{height}")
    if not fps or not math.isfinite(fps) or fps <= 0:
        raise VideoError("unknown frame rate")
    if round(abs(rotation)) % 180 == 90:  # ffmpeg auto-rotates while decoding
        width, height = height, width
    dur = float(duration) if duration not in (None, "N/A") else None
    return VideoInfo(width=width, height=height, fps=float(fps), duration_s=dur)


def _ratio(text: str | None) -> float:
    if not text or text in ("0/0", "N/A"):
        return 0.0
    num, _, den = text.partition("/")
    return float(num) / float(den or 1) if float(den or 1) else 0.0
