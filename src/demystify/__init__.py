"""demystify: a DVC pipeline reproducing Purushwalkam & Gupta, NeurIPS 2020."""

__version__ = "0.1.0"
