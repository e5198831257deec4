"""Reader of TrackingNet's box files, `<chunk>/anno/<video>.txt` ("x,y,w,h" per frame): the ground
truth extract_frames reads beside a video (video.extract.read_sidecar). The box format is GOT-10k's,
so the parser is shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from demystify.data.got10k import has_box, read_boxes


def read_annotations(chunk: str | Path, video: str) -> pd.DataFrame:
    """One row per frame: frame (0-based), x, y, w, h; TrackingNet has no cover/absence labels,
    so absence is 1 exactly where the row holds no box (`got10k.has_box`; its x, y, w, h are NaN)."""
    boxes = read_boxes(Path(chunk) / "anno" / f"{video}.txt")
    empty = ~has_box(boxes)
    boxes[empty] = np.nan
    return pd.DataFrame(
        {
            "frame": np.arange(len(boxes), dtype=np.int64),
            "x": boxes[:, 0],
            "y": boxes[:, 1],
            "w": boxes[:, 2],
            "h": boxes[:, 3],
            "cover": -1,
            "absence": empty.astype(np.int64),
        }
    )
