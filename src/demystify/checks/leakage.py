"""No test leakage: which world instances every pretraining source shows, and which instances the
classification test split holds.

The world records every image's instances: `corpora/object_centric/annotations.csv` and
`corpora/scene_crops/annotations.csv` (one row per image), `corpora/scenes/annotations.csv` (one
row per object of a scene) and `videos/<seq>/objects.csv` (one row per object and frame: the
target, the distractors and the passing occluders). Frames, pairs and their crops come from those
videos, so the four sources cover every pretraining variant. `eval/classification/annotations.csv`
names each classification image's split and instance. The great-expectations rules on these
tables are in `suites.leakage`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# source -> (annotations file under the corpora root, the column naming the item)
CORPORA = {
    "object_centric": ("object_centric/annotations.csv", "path"),
    "scenes": ("scenes/annotations.csv", "image"),
    "scene_crops": ("scene_crops/annotations.csv", "path"),
}


def _table(path: Path, item: str) -> pd.DataFrame:
    ann = pd.read_csv(path)
    instance = ann["instance"] if "instance" in ann else pd.Series([None] * len(ann), dtype=object)
    return pd.DataFrame({"item": ann[item].astype(str).to_numpy(), "instance": instance.to_numpy()})


def pretraining_instances(corpora: Path, videos: Path | None) -> dict[str, pd.DataFrame]:
    """source -> (item, instance) rows of every pretraining source with world metadata that exists;
    a table without an `instance` column gets null instances (which the suite rejects)."""
    out = {}
    for name, (rel, item) in CORPORA.items():
        if (corpora / rel).is_file():
            out[name] = _table(corpora / rel, item)
    files = sorted(videos.glob("*/objects.csv")) if videos is not None and videos.is_dir() else []
    if files:
        parts = []
        for f in files:
            objects = _table(f, "track")
            objects["item"] = f.parent.name + "/track " + objects["item"]
            parts.append(objects.drop_duplicates())  # one row per object of a video, not per frame
        out["videos"] = pd.concat(parts, ignore_index=True)
    return out


def classification_splits(annotations: Path) -> pd.DataFrame:
    """eval/classification/annotations.csv (path, split, category, instance) plus `splits_of_instance`,
    the number of splits each row's instance appears in (1 when the splits are disjoint)."""
    ann = pd.read_csv(annotations)
    ann["splits_of_instance"] = ann.groupby("instance")["split"].transform("nunique")
    return ann


def held_out_instances(classification: pd.DataFrame) -> list[int]:
    return sorted(
        int(i) for i in classification.loc[classification["split"] == "test", "instance"].unique()
    )
