"""DVC stage eval_segmentation@MODEL: python stages/eval_segmentation.py MODEL."""

import sys

from demystify.evaluation.downstream_stage import segment
from demystify.evaluation.model_stage import run

if __name__ == "__main__":
    sys.exit(run("segmentation", segment, sys.argv[1:]))
