"""How fast this machine runs the pipeline: machine.yaml, outside every stage's params.

Loader and pool workers, resident memory and checkpoint frequency change speed, never a single
output byte, so no stage lists machine.yaml (dvc.yaml; tests/test_wiring.py keeps it so): tuning
them reruns nothing. Stages read it from the working directory (DVC runs them in the repository
root); `DEMYSTIFY_MACHINE=<file>` names another (a cluster's nodes). A missing default file, a
missing section or key: the defaults below. A bad value is an error naming the file and the key.

`auto` sizes a value from what this process may use: the CPUs of os.sched_getaffinity (a Slurm or
cgroup CPU set, not the whole machine) and the machine's memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demystify.core.config import ConfigError, memory_bytes, read_yaml

ENV = "DEMYSTIFY_MACHINE"
DEFAULT_FILE = "machine.yaml"
LOADER_AUTO_MAX = (
    8  # loader processes `auto` starts at most: more only contend for memory bandwidth
)

# section -> key -> (default, kind); kinds: "pool" (>= 1 process, auto: one per CPU), "loader"
# (>= 0 processes, 0: in the main process; auto: one per CPU less the main one's, at most 8),
# "mb" (>= 0 MiB; auto: half the machine's memory), "steps" (>= 1, no auto), "bool" (true | false)
SCHEMA: dict[str, dict[str, tuple[Any, str]]] = {
    "frames": {"workers": ("auto", "pool")},
    "pairs": {"workers": ("auto", "pool")},
    "pretrain": {
        "workers": (2, "loader"),
        "resident_mb": (4096, "mb"),
        "checkpoint_every": (50, "steps"),
    },
    "invariance": {"workers": (0, "loader")},
    "classification": {"workers": (0, "loader")},
    "segmentation": {"workers": (0, "loader")},
    "stages": {"wait_for_cores": (True, "bool")},
}


class MachineError(ConfigError):
    """A machine.yaml problem, already phrased for the user (a ConfigError: stages report it alike)."""


@dataclass(frozen=True)
class Machine:
    frames_workers: int
    pairs_workers: int
    pretrain_workers: int
    resident_mb: int
    checkpoint_every: int
    invariance_workers: int
    classification_workers: int
    segmentation_workers: int
    wait_for_cores: bool = True


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _auto(kind: str) -> int:
    cpus = available_cpus()
    if kind == "pool":
        return cpus
    if kind == "loader":
        return min(LOADER_AUTO_MAX, cpus - 1)
    return memory_bytes() // 2 // 2**20  # "mb"


def _value(source: str, key: str, value: Any, kind: str) -> int | bool:
    if kind == "bool":
        if not isinstance(value, bool):
            raise MachineError(f"{source}: {key} = {value!r}: expected true or false")
        return value
    if value == "auto" and kind != "steps":
        return _auto(kind)
    least = {"pool": 1, "loader": 0, "mb": 0, "steps": 1}[kind]
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        allowed = f"an integer >= {least}" + ("" if kind == "steps" else " or auto")
        raise MachineError(f"{source}: {key} = {value!r}: expected {allowed}")
    return value


def machine_file() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT_FILE)


def parse(data: dict[str, Any], source: str) -> Machine:
    """Validate a machine.yaml mapping (sections and keys optional) and resolve its `auto` values."""
    unknown = [str(s) for s in data if s not in SCHEMA]
    if unknown:
        raise MachineError(
            f"{source}: unknown section(s) {', '.join(unknown)} (known: {', '.join(SCHEMA)})"
        )
    out = {}
    for section, keys in SCHEMA.items():
        given = data.get(section) or {}
        if not isinstance(given, dict):
            raise MachineError(
                f"{source}: {section} = {given!r}: expected a mapping of key -> value"
            )
        extra = [str(k) for k in given if k not in keys]
        if extra:
            raise MachineError(
                f"{source}: {section}.{extra[0]}: unknown key (known: {', '.join(keys)})"
            )
        for key, (default, kind) in keys.items():
            name = (
                key
                if key in ("resident_mb", "checkpoint_every", "wait_for_cores")
                else f"{section}_{key}"
            )
            out[name] = _value(source, f"{section}.{key}", given.get(key, default), kind)
    return Machine(**out)


def load(path: str | Path | None = None) -> Machine:
    """This machine's settings: `path`, else $DEMYSTIFY_MACHINE (which must exist), else machine.yaml
    in the working directory (the defaults when there is none)."""
    named = path is not None or bool(os.environ.get(ENV))
    path = Path(path) if path is not None else machine_file()
    if not path.is_file() and not named:
        return parse({}, str(path))
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        raise MachineError(
            f"{exc}"
            + (f" (named by ${ENV})" if path == machine_file() and os.environ.get(ENV) else "")
        ) from None
    return parse(data, str(path))
