"""Which ffmpeg / ffprobe binaries to run.

ffmpeg: `$DEMYSTIFY_FFMPEG` if set, else the binary shipped in the imageio-ffmpeg wheel (so a
fresh machine needs no system ffmpeg). ffprobe: `$DEMYSTIFY_FFPROBE`, else a system ffprobe if
one is on PATH, else None (probing then falls back to parsing `ffmpeg -i`).
"""

from __future__ import annotations

import functools
import os
import shutil


@functools.cache
def ffmpeg_exe() -> str:
    override = os.environ.get("DEMYSTIFY_FFMPEG")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise FileNotFoundError(f"DEMYSTIFY_FFMPEG={override!r} is not an executable file")
        return override
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.cache
def ffprobe_exe() -> str | None:
    override = os.environ.get("DEMYSTIFY_FFPROBE")
    if override:
        return override
    return shutil.which("ffprobe")
