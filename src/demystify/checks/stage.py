"""The `check_data` stage: validate the manifests, measure each corpus's object-centricity and
size, check that no classification test instance is in a pretraining source (leakage), write
results/checks/{validations.json, report.html, summary.json}, and stop only on the suites named
in `checks.fail_on`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from demystify.checks import centricity, leakage, suites
from demystify.checks.report import render_html
from demystify.core import gate
from demystify.core.config import ChecksParams, FramesParams, PairsParams, WorldParams
from demystify.core.frames_store import FramesError, read_manifest
from demystify.core.io import finite_or_null, write_json, write_text


class CheckError(RuntimeError):
    """A suite named in checks.fail_on failed; the message names every failed expectation."""


def measure_corpora(
    corpora: Path,
    world: WorldParams | None,
    manifest: pd.DataFrame | None,
    pairs: pd.DataFrame | None,
    videos_root: Path | None,
) -> dict[str, pd.DataFrame]:
    """Per-image measures of every training corpus that exists (annotated image corpora under `corpora`,
    the world's layout: <name>/annotations.csv)."""
    out: dict[str, pd.DataFrame] = {}
    if world is not None and (corpora / "object_centric" / "annotations.csv").is_file():
        out["object_centric"] = centricity.object_centric(
            corpora / "object_centric", world.image_size
        )
    if world is not None and (corpora / "scenes" / "annotations.csv").is_file():
        out["scenes"] = centricity.scenes(corpora / "scenes", world.scene_size)
        if (corpora / "scene_crops" / "annotations.csv").is_file():
            out["scene_crops"] = centricity.scene_crops(
                corpora / "scene_crops", corpora / "scenes", world.corpora.crop_margin
            )
    tracks_of = (
        centricity.video_tracks(manifest, videos_root)
        if manifest is not None and len(manifest)
        else {}
    )
    if manifest is not None and len(manifest):
        frames = centricity.video_frames(manifest, videos_root, pairs, tracks_of)
        if len(frames):
            out["video_frames"] = frames
    if pairs is not None and len(pairs) and manifest is not None:
        out["pair_crops"] = centricity.pair_crops(pairs, manifest, videos_root, tracks_of)
    return out


def _corpus_summary(measures: pd.DataFrame, outcome: suites.Outcome, image_size: int) -> dict:
    """Medians over a corpus's images. `object_side_px_median`: the main (largest) object's box side
    once the image is scaled to pretrain.image_size, sqrt(box area share) x image_size (the side of a
    square of that share of an image_size x image_size view); its area fraction is
    `largest_share_median`."""
    return {
        "images": len(measures),
        "unique_images": int(measures["image"].nunique()),
        "object_side_px_median": round(
            float(np.sqrt(measures["largest_share"].astype(float)).median() * image_size), 2
        ),
        "largest_share_median": round(float(measures["largest_share"].median()), 4),
        "objects_median": float(measures["objects"].median()),
        "center_offset_median": round(float(measures["center_offset"].median()), 4),
        "object_centric": outcome.success,
        "measured_from": ", ".join(sorted(measures["measured_from"].unique())),
    }


CLAIM2 = ("object_centric", "scenes", "scene_crops")  # claim 2's corpora: equal unique images


def check_leakage(
    validator: suites.Validator,
    corpora_root: Path,
    videos_root: Path | None,
    classification_annotations: Path | None,
    data_source: str,
) -> tuple[list[suites.Outcome], str | None]:
    """The leakage suites (no classification test instance in any pretraining source, disjoint
    classification splits), or none and the reason they were skipped."""
    if data_source == "folder":
        return [], (
            "skipped: data.source is folder (videos of your own carry no world instance ids); the "
            "world's pretraining sources are checked under data=synthetic"
        )
    if classification_annotations is None or not classification_annotations.is_file():
        return (
            [],
            f"skipped: no classification annotations ({classification_annotations}) to take the test instances from",
        )
    splits = leakage.classification_splits(classification_annotations)
    held_out = leakage.held_out_instances(splits)
    outcomes = [suites.classification_splits(validator, splits)]
    sources = leakage.pretraining_instances(corpora_root, videos_root)
    outcomes += [
        suites.leakage(validator, name, table, held_out) for name, table in sources.items()
    ]
    return outcomes, None


@dataclass(frozen=True)
class CheckPaths:
    """What check_data reads (the frames folder, the pairs manifest, the annotated corpora, the
    videos with their ground truth, the classification annotations) and the folder it writes."""

    frames_root: Path
    pairs_path: Path
    corpora_root: Path
    videos_root: Path | None
    classification_annotations: Path | None
    out_dir: Path

    @classmethod
    def of(
        cls,
        *,
        frames_root: str | Path,
        pairs_path: str | Path,
        corpora_root: str | Path,
        videos_root: str | Path | None,
        classification_annotations: str | Path | None,
        out_dir: str | Path,
    ) -> CheckPaths:
        """From strings or paths; an empty or None videos root or annotations path: None."""
        return cls(
            Path(frames_root),
            Path(pairs_path),
            Path(corpora_root),
            Path(videos_root) if videos_root else None,
            Path(classification_annotations) if classification_annotations else None,
            Path(out_dir),
        )


@dataclass(frozen=True)
class CheckParams:
    """The params check_data reads: its own section, the frames and pairs sections the manifests
    are checked against, the world (None: no world, no image corpora), data.source and
    pretrain.image_size (object sizes as training sees them)."""

    checks: ChecksParams
    frames: FramesParams
    pairs: PairsParams
    world: WorldParams | None
    data_source: str
    image_size: int

    @classmethod
    def of(cls, sections: dict) -> CheckParams:
        """From config.load("checks", "frames", "pairs", "data", "world", "pretrain")."""
        return cls(
            checks=sections["checks"],
            frames=sections["frames"],
            pairs=sections["pairs"],
            world=sections["world"],
            data_source=sections["data"].source,
            image_size=sections["pretrain"].image_size,
        )


def run_stage(paths: CheckPaths, params: CheckParams) -> dict:
    """Write results/checks/{summary.json, validations.json, report.html, gate.json}; raise CheckError
    when a suite named in checks.fail_on failed (after writing them all, the gate included)."""
    try:
        manifest = read_manifest(paths.frames_root)  # every shard's
    except FramesError:
        manifest = None
    pairs = pd.read_parquet(paths.pairs_path) if paths.pairs_path.is_file() else None
    validator = suites.Validator()
    outcomes = _manifest_outcomes(validator, manifest, pairs, paths, params)
    measures = measure_corpora(paths.corpora_root, params.world, manifest, pairs, paths.videos_root)
    corpora = {}
    for name, table in measures.items():
        outcome = suites.centricity(validator, name, table, params.checks.object_centric)
        outcomes.append(outcome)
        corpora[name] = _corpus_summary(table, outcome, params.image_size)
    leak_outcomes, leak_skipped = check_leakage(
        validator,
        paths.corpora_root,
        paths.videos_root,
        paths.classification_annotations,
        params.data_source,
    )
    outcomes += leak_outcomes
    summary = _summary(outcomes, corpora, manifest is not None, pairs is not None, leak_skipped)
    _write_results(paths.out_dir, outcomes, corpora, summary, params.checks)
    stopping = suites.stops(outcomes, params.checks)
    gate.write(paths.out_dir / "gate.json", [str(f) for f in stopping])
    if stopping:
        raise CheckError(
            "data checks failed (checks.fail_on):\n" + "\n".join(f"  {f}" for f in stopping)
        )
    return summary


def _manifest_outcomes(
    validator: suites.Validator,
    manifest: pd.DataFrame | None,
    pairs: pd.DataFrame | None,
    paths: CheckPaths,
    params: CheckParams,
) -> list[suites.Outcome]:
    """The frames manifest's suite and the pairs manifest's, for those that exist."""
    outcomes = []
    if manifest is not None:
        outcomes.append(
            suites.frames_manifest(validator, manifest, paths.frames_root, params.frames)
        )
    if pairs is not None and manifest is not None:
        outcomes.append(
            suites.pairs_manifest(
                validator, pairs, manifest, params.pairs, params.checks.box_tolerance
            )
        )
    return outcomes


def _summary(
    outcomes: list[suites.Outcome],
    corpora: dict[str, dict],
    has_manifest: bool,
    has_pairs: bool,
    leak_skipped: str | None,
) -> dict:
    """summary.json: every suite's verdict, the corpora, what is missing or was skipped."""
    summary = {
        "suites": {o.suite: o.success for o in outcomes},
        "corpora": corpora,
        "missing": sorted(
            n
            for n, found in (("frames manifest", has_manifest), ("pairs manifest", has_pairs))
            if not found
        ),
    }
    if all(name in corpora for name in CLAIM2):
        counts = [corpora[name]["unique_images"] for name in CLAIM2]
        summary["claim2_equal_images"] = len(set(counts)) == 1
    if leak_skipped:
        summary["skipped"] = {"leakage": leak_skipped}
    return summary


def _write_results(
    out_dir: Path,
    outcomes: list[suites.Outcome],
    corpora: dict[str, dict],
    summary: dict,
    checks: ChecksParams,
) -> None:
    """summary.json, validations.json (every expectation's raw result) and report.html."""
    write_json(out_dir / "summary.json", summary)
    # GX reports an observed value it could not compute (an empty column) as NaN: null in JSON
    raw = finite_or_null({o.suite: o.raw for o in outcomes})
    write_text(
        out_dir / "validations.json",
        json.dumps(raw, indent=1, sort_keys=True, default=str, allow_nan=False) + "\n",
    )
    write_text(
        out_dir / "report.html", render_html(outcomes, corpora, checks, summary.get("skipped", {}))
    )
