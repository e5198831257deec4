"""great-expectations suites (GX 1.x, an in-memory context) and their plain-Python outcomes.

GX is imported here only, with analytics and progress bars off; the rest of the project never
pays its import time. Derived columns (a file's existence, the step between frame indices, how
far a box sticks out of its frame) are computed with pandas first, so every rule is a stock
expectation on a named column and a failure names that column and its observed value.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from demystify.core.config import CentricityRange, ChecksParams, FramesParams, PairsParams
from demystify.core.frames_store import FrameStore


@dataclass
class Failure:
    suite: str
    expectation: str
    column: str
    observed: str

    def __str__(self) -> str:
        return f"{self.suite}: {self.expectation} on column {self.column!r} failed (observed: {self.observed})"


@dataclass
class Outcome:
    suite: str
    success: bool
    results: list[dict] = field(default_factory=list)  # expectation, column, success, observed
    failures: list[Failure] = field(default_factory=list)
    raw: dict = field(default_factory=dict)  # GX's own JSON result


def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # GX imports sre_constants
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )
    return gx, DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig


class Validator:
    """One ephemeral GX context for a run; `validate` runs a suite on a DataFrame."""

    def __init__(self) -> None:
        gx, DataContextConfig, InMemory, ProgressBars = _gx()
        self.gx = gx
        config = DataContextConfig(
            store_backend_defaults=InMemory(),
            analytics_enabled=False,
            progress_bars=ProgressBars(globally=False, metric_calculations=False),
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.source = self.context.data_sources.add_pandas("demystify")

    def validate(self, name: str, frame: pd.DataFrame, expectations: list) -> Outcome:
        batch = (
            self.source.add_dataframe_asset(name)
            .add_batch_definition_whole_dataframe("all")
            .get_batch(batch_parameters={"dataframe": frame})
        )
        suite = self.context.suites.add(
            self.gx.ExpectationSuite(name=name, expectations=expectations)
        )
        result = batch.validate(suite, result_format="SUMMARY")
        outcome = Outcome(name, bool(result.success))
        raw = result.to_json_dict()
        raw.pop("meta", None)  # run times and ids: keep the file reproducible
        raw.pop("id", None)
        for r in raw.get("results", []):
            r.get("expectation_config", {}).pop("id", None)  # a random UUID per expectation
        outcome.raw = raw
        for r in result.results:
            cfg = r.expectation_config
            column = cfg.kwargs.get("column", "")
            observed = _observed(r.result)
            outcome.results.append(
                {
                    "expectation": cfg.type,
                    "column": column,
                    "success": bool(r.success),
                    "observed": observed,
                    "kwargs": {
                        k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "column")
                    },
                }
            )
            if not r.success:
                outcome.failures.append(Failure(name, cfg.type, column, observed))
        return outcome


def _observed(result: dict) -> str:
    if "observed_value" in result:
        value = result["observed_value"]
        return (
            f"{float(value):.4g}"
            if isinstance(value, (int, float, np.floating, np.integer))
            else str(value)
        )
    if result.get("unexpected_count"):
        sample = ", ".join(str(v) for v in result.get("partial_unexpected_list", [])[:5])
        return f"{result['unexpected_count']} of {result.get('element_count')} rows, e.g. {sample}"
    return "ok"


# --- the suites ---------------------------------------------------------------------------------


def frames_manifest(
    v: Validator, manifest: pd.DataFrame, frames_root: Path, p: FramesParams
) -> Outcome:
    df = manifest.copy()
    store = FrameStore(frames_root)
    df["file_exists"] = [
        store.exists(path) if isinstance(path, str) else False for path in df["path"]
    ]
    df["short_side"] = df[["width", "height"]].min(axis=1)
    df["frame_step"] = df.groupby("video")["frame"].diff().fillna(1)
    # Range checks skip nulls, and inf is in range: the box rules are on derived columns. A row has
    # all four box values or none; where it has them they are finite (null where it has none).
    box = df[["x", "y", "w", "h"]].to_numpy(float)
    values = np.count_nonzero(~np.isnan(box), axis=1)
    df["box_values"] = values
    finite = (np.isfinite(box) | np.isnan(box)).all(1)  # every present value (inf is not NaN)
    df["box_finite"] = pd.Series(finite, index=df.index, dtype=object).where(values > 0, None)
    # Frames equal to their predecessor (ffmpeg filling a timestamp gap, a frozen picture), per video;
    # null for a manifest without extract_frames' `duplicate` flag, which the not-null rule names.
    df["duplicate_share"] = (
        df.groupby("video")["duplicate"].transform("mean").astype(float)
        if "duplicate" in df
        else np.nan
    )
    e = v.gx.expectations
    expectations = [
        e.ExpectColumnValuesToNotBeNull(column=c)
        for c in ("video", "frame", "time_s", "path", "width", "height")
    ]
    expectations += [
        e.ExpectColumnValuesToBeInSet(column="short_side", value_set=[p.size]),
        e.ExpectColumnValuesToBeBetween(
            column="frame_step", min_value=1
        ),  # indices increase within a video
        e.ExpectColumnValuesToBeInSet(column="file_exists", value_set=[True]),
        e.ExpectColumnValuesToBeBetween(column="time_s", min_value=0),
        e.ExpectColumnValuesToBeInSet(column="box_values", value_set=[0, 4]),
        e.ExpectColumnValuesToBeInSet(column="box_finite", value_set=[True]),
        *(e.ExpectColumnValuesToBeBetween(column=c, min_value=0, strict_min=True) for c in "wh"),
        e.ExpectColumnValuesToNotBeNull(column="duplicate_share"),
        e.ExpectColumnValuesToBeBetween(column="duplicate_share", max_value=p.max_duplicate_share),
    ]
    return v.validate("frames_manifest", df, expectations)


def pairs_manifest(
    v: Validator, pairs: pd.DataFrame, manifest: pd.DataFrame, p: PairsParams, tolerance: float
) -> Outcome:
    sizes = manifest.groupby("video")[["width", "height"]].first()
    df = pairs.join(sizes, on="video")
    for s in "ab":
        df[f"{s}_overflow"] = np.maximum.reduce(
            [
                -df[f"{s}_x"],
                -df[f"{s}_y"],
                df[f"{s}_x"] + df[f"{s}_w"] - df["width"],
                df[f"{s}_y"] + df[f"{s}_h"] - df["height"],
            ]
        )
    e = v.gx.expectations
    expectations = [
        e.ExpectColumnValuesToNotBeNull(column=c)
        for c in ("video", "frame_a", "frame_b", "path_a", "path_b", "width")
    ]
    expectations += [
        e.ExpectColumnValuesToBeBetween(column="gap", min_value=p.min_gap, max_value=p.max_gap),
        e.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1),
        e.ExpectColumnValuesToBeBetween(
            column="iou_gt", min_value=0, max_value=1
        ),  # nulls: no ground truth
    ]
    if "view_change_deg" in df:  # nulls: no recorded poses (real data sets)
        expectations.append(
            e.ExpectColumnValuesToBeBetween(column="view_change_deg", min_value=0, max_value=180)
        )
    if "scale_change" in df:  # a factor >= 1; nulls: no ground-truth box
        expectations.append(e.ExpectColumnValuesToBeBetween(column="scale_change", min_value=1))
    for s in "ab":
        expectations += [
            e.ExpectColumnValuesToBeBetween(column=f"{s}_{d}", min_value=0, strict_min=True)
            for d in "wh"
        ]
        expectations.append(
            e.ExpectColumnValuesToBeBetween(column=f"{s}_overflow", max_value=tolerance)
        )
    return v.validate("pairs_manifest", df, expectations)


def centricity(v: Validator, corpus: str, measures: pd.DataFrame, r: CentricityRange) -> Outcome:
    e = v.gx.expectations
    return v.validate(
        f"centricity_{corpus}",
        measures,
        [
            e.ExpectColumnMedianToBeBetween(column="largest_share", min_value=r.min_largest_share),
            e.ExpectColumnMedianToBeBetween(column="objects", max_value=r.max_objects),
            e.ExpectColumnMedianToBeBetween(column="center_offset", max_value=r.max_center_offset),
        ],
    )


def leakage(v: Validator, source: str, instances: pd.DataFrame, held_out: list[int]) -> Outcome:
    """No classification test instance in a pretraining source (`instances`: item, instance), and
    every item names its instance."""
    e = v.gx.expectations
    return v.validate(
        f"leakage_{source}",
        instances,
        [
            e.ExpectColumnValuesToNotBeNull(column="instance"),
            e.ExpectColumnValuesToNotBeInSet(column="instance", value_set=held_out),
        ],
    )


def classification_splits(v: Validator, annotations: pd.DataFrame) -> Outcome:
    """The classification evaluation's train, val and test splits are on disjoint instances."""
    e = v.gx.expectations
    return v.validate(
        "leakage_classification_splits",
        annotations,
        [
            e.ExpectColumnValuesToNotBeNull(column="instance"),
            e.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "val", "test"]),
            e.ExpectColumnValuesToBeInSet(column="splits_of_instance", value_set=[1]),
        ],
    )


FAMILIES = (
    "centricity",
    "leakage",
)  # `checks.fail_on` names a family for all its suites (`leakage_scenes`, ...)


def stops(outcomes: list[Outcome], checks: ChecksParams) -> list[Failure]:
    """Failures of the suites named in `checks.fail_on` (centricity, leakage: every suite of the family)."""

    def family(name: str) -> str:
        return next((f for f in FAMILIES if name.startswith(f + "_")), name)

    return [f for o in outcomes if family(o.suite) in checks.fail_on for f in o.failures]
