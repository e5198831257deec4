"""The invariance part of `evaluate@MODEL`: features of every configured set, a feature file per
set (so anyone can recompute the score), each transformation set's contribution to it (for the
report's intervals), and the score at each K in one metrics file."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from demystify import machine
from demystify.core.config import InvarianceParams
from demystify.core.io import write_json, write_npz
from demystify.evaluation import sets as readers
from demystify.evaluation.features import extract, load_model
from demystify.evaluation.invariance import InvarianceError, invariance_scores, set_contributions


def read_sets(
    ip: InvarianceParams,
) -> tuple[dict[str, tuple[readers.EvalSet, int]], dict[str, str]]:
    """The configured sets with their input size; whole sets the readers could not use go in `skipped`."""
    wanted = set(ip.sets)
    out: dict[str, tuple[readers.EvalSet, int]] = {}
    for kind in ("view", "ill", "col"):
        if f"aloi_{kind}" in wanted:
            out[f"aloi_{kind}"] = (readers.aloi(ip.aloi, kind), ip.aloi_size)
    if "got10k_occlusion" in wanted:
        out["got10k_occlusion"] = (
            readers.got10k_occlusion(ip.got10k, ip.got10k_seed, ip.got10k_min_span),
            ip.got10k_size,
        )
    if wanted & {"pascal3d_instance", "pascal3d_instance_viewpoint"}:
        for name, s in readers.pascal3d(ip.pascal3d).items():
            if name in wanted:
                out[name] = (s, ip.pascal3d_size)
    skipped = {name: "no images" for name, (s, _) in out.items() if len(s) == 0}
    return {k: v for k, v in out.items() if k not in skipped}, skipped


def write_features(path: Path, feat: np.ndarray, s: readers.EvalSet) -> None:
    """The feature file of docs/data.md: feat (N, D) float32, instance, classes, path."""
    write_npz(
        path,
        feat=feat.astype(np.float32),
        instance=s.instance,
        classes=s.classes.astype(str),
        path=np.asarray(s.paths, dtype=str),
        unit=s.unit.astype(str),
    )


def score_file(path: str | Path, ks=(10, 25)) -> dict[int, float]:
    """The score from a feature file alone (what a third party would run)."""
    with np.load(path) as f:
        return invariance_scores(f["feat"], f["instance"], f["classes"], tuple(ks))


def evaluate(
    name: str,
    arch: str,
    model_path: str | Path | None,
    ip: InvarianceParams,
    out_dir: str | Path,
    device: str,
    progress: bool = True,
    workers: int | None = None,
) -> dict:
    """`workers`: loader processes (None: machine.yaml's invariance.workers)."""
    out_dir = Path(out_dir)
    workers = machine.load().invariance_workers if workers is None else workers
    sets, skipped = read_sets(ip)
    model = load_model(model_path, arch, device)
    metrics: dict[str, dict] = {}
    skipped_ks: dict[str, dict[str, str]] = {}  # set -> topK -> why that K was not scored there
    cache: dict[tuple, np.ndarray] = {}  # the two PASCAL3D+ sets share their images
    for set_name, (s, size) in sets.items():
        key = (tuple(s.paths), tuple(map(str, s.boxes)), size)
        if key not in cache:
            cache[key] = extract(
                model,
                s.paths,
                s.boxes,
                size,
                device,
                ip.batch_size,
                workers,
                desc=f"invariance@{name} {set_name}",
                progress=progress,
            )
        feat = cache[key]
        write_features(out_dir / "features" / f"{set_name}.npz", feat, s)
        # a K beyond this set's feature width is skipped, with a note, for this set alone: the
        # other Ks are still scored (config refuses such a K for the configured architectures)
        ks = tuple(k for k in ip.ks if k <= feat.shape[1])
        for k in sorted(set(ip.ks) - set(ks)):
            skipped_ks.setdefault(set_name, {})[f"top{k}"] = (
                f"K {k} > the {feat.shape[1]} feature units"
            )
            print(
                f"evaluate@{name}: invariance set {set_name}: top{k} skipped: K {k} > the {feat.shape[1]} "
                "feature units",
                file=sys.stderr,
            )
        try:
            if not ks:
                raise InvarianceError(
                    f"no K of invariance.ks {ip.ks} fits the {feat.shape[1]} feature units"
                )
            contributions = set_contributions(feat, s.instance, s.classes, max(ks), s.unit)
        except InvarianceError as exc:
            skipped[set_name] = str(exc)
            print(f"evaluate@{name}: invariance set {set_name} skipped: {exc}", file=sys.stderr)
            continue
        # each transformation set's terms, which the report resamples for confidence intervals
        contributions.save(out_dir / "contributions" / f"{set_name}.npz")
        scores = contributions.full(ks)
        metrics[set_name] = {f"top{k}": round(v, 6) for k, v in scores.items()}
        metrics[set_name].update(images=len(s), sets=int(len(np.unique(s.instance))))
    notes = {n: s.skipped for n, (s, _) in sets.items() if s.skipped}
    write_json(
        out_dir / "skipped.json", {"sets": skipped, "ks": skipped_ks, "dropped_by_readers": notes}
    )
    if not metrics:  # exit 0 with empty metrics would read as a result
        raise InvarianceError(
            "no invariance set could be scored: "
            + "; ".join(f"{n}: {why}" for n, why in skipped.items())
        )
    write_json(out_dir / "metrics.json", metrics)
    return metrics
