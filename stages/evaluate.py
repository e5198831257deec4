"""DVC stage evaluate@MODEL: python stages/evaluate.py MODEL."""

import sys

from demystify.evaluation.model_stage import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
