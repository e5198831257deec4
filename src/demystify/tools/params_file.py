"""Compose conf/ into params.yaml exactly as `dvc exp run` does (DVC's own Hydra composition)."""

from __future__ import annotations

import sys
from pathlib import Path

from demystify.core.config import ConfigError, read_yaml, validate
from demystify.core.io import atomic_path


def compose(
    output: str | Path, overrides: list[str] | None = None, config_dir: str | Path = "conf"
) -> None:
    """Compose into `output`; a key outside the schema (`+seed=1` included: Hydra's `+` adds any
    key), a variant name or a path the stage commands could not quote safely is refused by name and
    leaves `output` as it was, so no later `dvc repro` runs it."""
    from dvc.utils.hydra import compose_and_dump

    with atomic_path(output) as tmp:
        dumped = tmp.with_suffix(".yaml")  # compose_and_dump picks its writer by the suffix
        try:
            compose_and_dump(
                dumped,
                str(Path(config_dir).resolve()),
                None,
                "config",
                str(Path(config_dir).resolve()),
                list(overrides or []),
            )
            validate(read_yaml(dumped), source=str(output))  # the whole tree's keys, cmd values
            dumped.replace(tmp)
        finally:
            dumped.unlink(missing_ok=True)


if __name__ == "__main__":
    try:
        compose("params.yaml", sys.argv[1:])
    except ConfigError as exc:
        print(f"params: {exc}", file=sys.stderr)
        sys.exit(1)
