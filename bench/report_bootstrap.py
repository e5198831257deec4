"""Cost and calibration of the report's invariance bootstrap: seconds per model and set for
`report.resamples` draws, each recomputing the whole score on a draw of the units
(`SetContributions.scores`), at the sizes of the world's sets; and, on constructed data with one
transformation set per class (as ALOI), the interval's coverage of the population difference, the
bootstrap spread against the sampling spread, and the draws' mean against the full score.
Runs on a fresh clone (no data needed):

    python bench/report_bootstrap.py              # about 3 minutes on 2 cores
    python bench/report_bootstrap.py --trials 400 --draws 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from demystify.evaluation.invariance import set_contributions
from demystify.report import intervals

SIZES = {  # (objects, images per object) of the world's ALOI sets, one set and unit per object
    "aloi_view (50 objects x 24 views)": (50, 24),
    "aloi_col (50 objects x 12 colours)": (50, 12),
    "smoke aloi (16 objects x 8 views)": (16, 8),
}


def timing(draws: int, rng: np.random.Generator) -> None:
    print(f"seconds for {draws} draws of one model and set (D = 512):")
    for name, (units, views) in SIZES.items():
        ids = np.repeat(np.arange(units), views)
        c = set_contributions(
            rng.normal(size=(len(ids), 512)).astype(np.float32),
            ids,
            None,
            25,
            np.array([f"aloi:{i}" for i in ids]),
        )
        w = intervals.unit_draws(units, draws, "bench")
        start = time.perf_counter()
        c.scores(w, (10, 25))
        print(f"  {name}: {time.perf_counter() - start:.2f} s")


def calibration(
    trials: int, draws: int, rng: np.random.Generator, d: int = 32, views: int = 8, n: int = 60
) -> None:
    """Model B is noisier than A per object; the truth is the difference on 3 x 4,000 objects."""

    def population(size):
        mu, sa = rng.normal(size=(size, d)), rng.uniform(0.3, 1.5, size)
        return mu, sa, sa * rng.uniform(0.8, 1.4, size)

    def contributions(mu, s):
        ids = np.repeat(np.arange(len(mu)), views)
        feat = (mu[:, None, :] + s[:, None, None] * rng.normal(size=(len(mu), views, d))).reshape(
            -1, d
        )
        return set_contributions(feat, ids, None, 10, np.array([f"o:{i}" for i in ids]))

    truth = np.mean(
        [
            contributions(mu, a).full((10,))[10] - contributions(mu, b).full((10,))[10]
            for mu, a, b in (population(4000) for _ in range(3))
        ]
    )
    covered, fulls, spreads, ratios = 0, [], [], []
    for t in range(trials):
        mu, a, b = population(n)
        ca, cb = contributions(mu, a), contributions(mu, b)
        w = intervals.unit_draws(n, draws, f"trial{t}")
        da, db = ca.scores(w, (10,))[10], cb.scores(w, (10,))[10]
        full = ca.full((10,))[10] - cb.full((10,))[10]
        i = intervals.interval(full, da - db)
        covered += i.low <= truth <= i.high
        fulls.append(full)
        spreads.append(np.std(da - db))
        ratios.append(da.mean() / ca.full((10,))[10])
    print(
        f"calibration ({trials} samples of {n} objects, {draws} draws each): coverage {covered / trials:.3f} "
        f"(nominal 0.95), sampling SD {np.std(fulls):.3f}, mean bootstrap SD {np.mean(spreads):.3f}, "
        f"draw mean / full score {np.mean(ratios):.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=1000, help="report.resamples")
    ap.add_argument("--trials", type=int, default=200)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    rng = np.random.default_rng(0)
    timing(args.draws, rng)
    calibration(args.trials, 300, rng)


if __name__ == "__main__":
    main()
