"""The data gate between `check_data` and training: `results/checks/gate.json`.

`check_data` writes it on every run, passing or not: the failures of the suites named in
`checks.fail_on`, as messages. Every `pretrain@VARIANT` stage depends on it and refuses to train
while it lists a failure, so no command (a targeted `dvc repro pretrain@X`, `--keep-going`, a
queued experiment, the stage script run by hand) trains on data that failed a required check.
Its content is only the verdict, so a change of params that leaves the verdict alone retrains
nothing. Plain JSON: reading it never imports great-expectations.
"""

from __future__ import annotations

import json
from pathlib import Path

from demystify.core.io import write_json


class GateError(RuntimeError):
    """The data checks failed (or never ran); the message says which and why."""


def write(path: str | Path, failures: list[str]) -> None:
    write_json(path, {"passed": not failures, "failures": failures})


def require_passed(path: str | Path) -> None:
    path = Path(path)
    try:
        gate = json.loads(path.read_text())
    except FileNotFoundError:
        raise GateError(
            f"{path}: not found; run the data checks first (`dvc repro check_data`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise GateError(f"{path}: unreadable ({exc}); rerun `dvc repro check_data`") from None
    if not isinstance(gate, dict) or not isinstance(gate.get("failures"), list):
        raise GateError(
            f"{path}: not a data-gate file (expected passed and failures); rerun `dvc repro check_data`"
        )
    if gate["failures"]:
        raise GateError(
            f"{path}: the data checks named in checks.fail_on failed, so nothing is trained:\n"
            + "\n".join(f"  {f}" for f in gate["failures"])
        )
