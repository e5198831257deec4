"""The cores of one machine, shared by the stages running on it: a stage waits for free cores
instead of oversubscribing them.

torch on the CPU runs one OpenMP thread per core, and its results depend on that thread count in
the last bits (measured: 1 and 2 threads train different bytes), so the count must not follow the
load. Several stages at once (`dvc queue start -j N`, two `dvc exp run`s) each with all the cores'
threads stall each other at every parallel region: measured on 2 cores, 4 training processes at
once took 10.5x as long as the same 4 one after another (BENCHMARKS.md, bench/threads.py).

So each stage holds one slot per thread it runs (at most the CPUs it may use) for its life: slots
are `flock`ed files `slot-K` in a per-user folder of the system's temporary directory
($DEMYSTIFY_CORES_DIR to choose another). A stage that finds too few free waits, saying so once,
and takes them when they free; the kernel frees a dead stage's slots. Stages then run side by side
only when their threads fit the cores (the test suite's single-threaded stages do), otherwise one
after another: no slower than running them in turn, and the same bytes. machine.yaml
`stages.wait_for_cores: false` turns it off. Processes of one torchrun run (WORLD_SIZE > 1) never
wait: they must meet in their collectives.
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path

ENV = "DEMYSTIFY_CORES_DIR"
POLL_S = 0.5
_held: list[int] = []  # the slots' file descriptors, kept for the process's life


def slots_dir() -> Path:
    return Path(
        os.environ.get(ENV) or Path(tempfile.gettempdir()) / f"demystify-cores-{os.getuid()}"
    )


def threads_wanted(cpus: int) -> int:
    """The threads this process computes with: torch's intra-op threads once torch is imported,
    else all the CPUs (the data stages' process pools)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else cpus


def claim(label: str, cpus: int, wanted: int | None = None) -> int:
    """Hold min(wanted, cpus) slots, waiting while other stages hold them; returns how many."""
    if _held or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return len(_held)
    need = max(1, min(threads_wanted(cpus) if wanted is None else wanted, cpus))
    folder = slots_dir()
    folder.mkdir(parents=True, exist_ok=True)
    said, started = False, time.monotonic()
    while True:
        got = _try_take(folder, cpus, need)
        if got:
            _held.extend(got)
            if said:
                print(
                    f"{label}: took {need} core(s) after {time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                )
            return need
        if not said:
            print(
                f"{label}: waiting for {need} of {cpus} cores (other demystify stages hold them; machine.yaml "
                "stages.wait_for_cores: false runs at once)",
                file=sys.stderr,
            )
            said = True
        time.sleep(POLL_S)


def _try_take(folder: Path, cpus: int, need: int) -> list[int]:
    """`need` slots of the first `cpus`, or none (all released) when fewer are free."""
    got = []
    for k in range(cpus):
        fd = os.open(folder / f"slot-{k}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        got.append(fd)
        if len(got) == need:
            return got
    for fd in got:
        os.close(fd)  # closing the descriptor drops its lock
    return []


def release() -> None:
    """Give the slots back before the process ends (tests; a process ends with them freed anyway)."""
    while _held:
        os.close(_held.pop())
