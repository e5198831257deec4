"""DVC stage report: reports/report.md (tables, claims, plots) and reports/metrics.json."""

import sys

from demystify import config
from demystify.report.build import ReportError, build


def main() -> int:
    try:
        p = config.load("report", "invariance", "variants")
        r = p["report"]
        if r.invariance_k not in p["invariance"].ks:
            raise ReportError(f"report.invariance_k = {r.invariance_k} is not one of invariance.ks {p['invariance'].ks}")
        trained = [m for m, v in p["variants"].items() if v.method in ("moco", "supervised")]
        result = build("results/summary", "results/pretrain", "reports", list(p["variants"]), f"top{r.invariance_k}",
                       "results", trained, r.resamples, r.level, r.sweep or None)
    except (config.ConfigError, ReportError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    print("report: " + "; ".join(f"claim {c}: {v}" for c, v in result["verdicts"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
