"""Writers in the public data sets' own layouts (GOT-10k, ALOI, ImageFolder, VOC-like masks)."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import ffmpeg
import numpy as np

from demystify.core.ffmpeg_bin import ffmpeg_exe


def write_image(path: Path, rgb: np.ndarray, jpeg_quality: int = 95) -> None:
    """PNG or JPEG by suffix; rgb is (H, W, 3) uint8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    )
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"could not write image {path}")


def write_pascal3d_annotation(
    path: Path,
    image_name: str,
    size: tuple[int, int],
    cls: str,
    box_xywh: tuple[float, float, float, float],
    azimuth: float,
    elevation: float,
) -> None:
    """A PASCAL3D+ `record` (.mat): one object with its 1-based [x1 y1 x2 y2] box and coarse viewpoint."""
    from scipy.io import savemat

    x, y, w, h = box_xywh
    viewpoint = {
        "azimuth_coarse": float(azimuth),
        "elevation_coarse": float(elevation),
        "azimuth": float(azimuth),
        "elevation": float(elevation),
        "distance": 0.0,
    }
    objects = np.zeros(
        (1, 1),
        dtype=[
            ("class", object),
            ("bbox", object),
            ("viewpoint", object),
            ("truncated", object),
            ("occluded", object),
            ("difficult", object),
        ],
    )
    objects[0, 0] = (cls, np.array([[x + 1, y + 1, x + w, y + h]], dtype=float), viewpoint, 0, 0, 0)
    record = {
        "filename": image_name,
        "database": "ImageNet",
        "imgsize": np.array([[size[1], size[0], 3]], dtype=float),
        "objects": objects,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    savemat(buffer, {"record": record})
    path.write_bytes(_MAT_HEADER + buffer.getvalue()[len(_MAT_HEADER) :])


# A MAT 5 file opens with 116 bytes of free text; scipy writes its creation time there, which would
# give the same annotation other bytes on every run. This fixed text keeps the files reproducible.
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by demystify".ljust(116)


def write_mask(path: Path, mask: np.ndarray) -> None:
    """Single-channel uint8 PNG: 0 background, c + 1 for category c (VOC-style indices)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), mask.astype(np.uint8)):
        raise OSError(f"could not write mask {path}")


def encode_mp4(path: Path, frames: np.ndarray, fps: float, crf: int = 18) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames as H.264 mp4 with ffmpeg (bit-exact flags for determinism)."""
    t, h, w, _ = frames.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
    stream = ffmpeg.output(
        stream,
        str(path),
        vcodec="libx264",
        pix_fmt="yuv420p",
        crf=crf,
        preset="veryfast",
        g=max(1, int(round(fps))),
        threads=1,
        fflags="+bitexact",
        flags="+bitexact",
        map_metadata=-1,
        **{"x264-params": "threads=1:deterministic=1"},
    )
    try:
        ffmpeg.run(
            stream,
            cmd=ffmpeg_exe(),
            input=np.ascontiguousarray(frames).tobytes(),
            overwrite_output=True,
            quiet=True,
        )
    except ffmpeg.Error as exc:
        raise RuntimeError(
            f"ffmpeg failed encoding {path}: {exc.stderr.decode(errors='replace')[-500:]}"
        ) from exc


def write_got_annotations(
    seq_dir: Path, boxes: np.ndarray, cover: np.ndarray, absence: np.ndarray, meta: dict[str, str]
) -> None:
    """GOT-10k per-sequence files: groundtruth.txt (x,y,w,h per frame), cover.label,
    absence.label, cut_by_image.label and meta_info.ini."""
    seq_dir.mkdir(parents=True, exist_ok=True)
    (seq_dir / "groundtruth.txt").write_text(
        "".join(f"{x:.4f},{y:.4f},{w:.4f},{h:.4f}\n" for x, y, w, h in boxes)
    )
    (seq_dir / "cover.label").write_text("".join(f"{int(c)}\n" for c in cover))
    (seq_dir / "absence.label").write_text("".join(f"{int(a)}\n" for a in absence))
    lines = ["[METAINFO]"] + [f"{k}: {v}" for k, v in meta.items()]
    (seq_dir / "meta_info.ini").write_text("\n".join(lines) + "\n")


def got_meta(
    object_class: str, fps: float, width: int, height: int, frames: int, motion: str
) -> dict[str, str]:
    return {
        "url": "synthetic://demystify-world",
        "begin": "00:00:00",
        "end": f"00:00:{frames / fps:05.2f}",
        "anno_fps": f"{fps:g}Hz",
        "object_class": object_class,
        "motion_class": motion,
        "major_class": object_class,
        "root_class": "object",
        "motion_adverb": "slowly",
        "resolution": f"({width}, {height})",
    }


def write_list(path: Path, names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names))
