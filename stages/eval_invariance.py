"""DVC stage eval_invariance@MODEL: python stages/eval_invariance.py MODEL."""

import sys

from demystify.evaluation.invariance_stage import evaluate
from demystify.evaluation.model_stage import run


def describe(metrics: dict) -> str:
    return ", ".join(f"{k} {v.get('top10')}" for k, v in metrics.items())


if __name__ == "__main__":
    sys.exit(run("invariance", evaluate, sys.argv[1:], describe))
