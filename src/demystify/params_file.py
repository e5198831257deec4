"""Compose conf/ into params.yaml exactly as `dvc exp run` does (DVC's own Hydra composition)."""

from __future__ import annotations

import sys
from pathlib import Path


def compose(output: str | Path, overrides: list[str] | None = None, config_dir: str | Path = "conf") -> None:
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(Path(output), str(Path(config_dir).resolve()), None, "config", str(Path(config_dir).resolve()),
                     list(overrides or []))


if __name__ == "__main__":
    compose("params.yaml", sys.argv[1:])
