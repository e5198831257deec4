"""DVC stage eval_classification@MODEL: python stages/eval_classification.py MODEL."""

import sys

from demystify.evaluation.downstream_stage import classify
from demystify.evaluation.model_stage import run

if __name__ == "__main__":
    sys.exit(run("classification", classify, sys.argv[1:]))
