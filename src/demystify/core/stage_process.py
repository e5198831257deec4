"""A DVC stage's process never outlives the DVC process that started it.

`kill -9` of `dvc repro`/`dvc exp run` used to leave the running stage alive (parent 1): a rerun
restored the stage from the run-cache, and minutes later the orphan overwrote the outputs and the
git-tracked metrics with its own result. `guard()`, called first in every stage script's main,
does nothing outside DVC (no DVC_STAGE in the environment); under DVC it

- finds the launcher: the nearest ancestor that does not carry this DVC_STAGE in its environment
  (DVC itself, whether or not the shell of the stage's `cmd` exec'd python; torchrun's agent and
  the shell carry it);
- watches it and the parent from a daemon thread (every 0.25 s, and at once on the parent-death
  signal, PR_SET_PDEATHSIG): once either is gone, it SIGKILLs every descendant (pool workers that
  rename frames folders into place, ffmpeg, loader workers), says so in one stderr line, and
  SIGKILLs itself. The death signal is SIGUSR2 with a handler that re-checks, not SIGKILL: a
  SIGKILL would leave the descendants writing, and a spawning thread's exit (which also sends it)
  must not kill a healthy stage;
- holds an exclusive lock `.dvc/tmp/stage-locks/<stage>.lock` (one per rank under torchrun) for
  the process's life, so a later run of the same stage refuses by name while an earlier one is
  still running, instead of racing it;
- waits for its share of the machine's cores (demystify.cores), so stages run at once only when
  their threads fit the cores.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import re
import signal
import sys
import threading
from pathlib import Path

POLL_S = 0.25
_PR_SET_PDEATHSIG = 1
_held: dict = {}  # the lock's file descriptor and the watchdog, kept for the process's life


class StageBusy(RuntimeError):
    """Another process of the same stage still holds its lock."""


def guard() -> None:
    """Tie this stage process to the DVC process that started it (see the module's docstring);
    a stage already running elsewhere in this repository ends this one with exit 1, named."""
    stage = os.environ.get("DVC_STAGE")
    if not stage or _held:
        return
    try:
        lock_stage(stage, os.environ.get("DVC_ROOT"))
    except StageBusy as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
    watch(stage)
    share_cores(stage)


def share_cores(stage: str) -> None:
    """Wait for this stage's share of the machine's cores (demystify.cores; machine.yaml
    stages.wait_for_cores)."""
    from demystify import cores, machine

    try:
        wait = machine.load().wait_for_cores
    except machine.MachineError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
    if wait:
        cores.claim(stage, machine.available_cpus())


def lock_stage(stage: str, root: str | None) -> Path | None:
    """Take `.dvc/tmp/stage-locks/<stage>.lock` under DVC's repository root for the life of this
    process (the kernel drops it when the process dies, however it dies)."""
    if not root or not (Path(root) / ".dvc").is_dir():
        return None
    rank = (
        f".rank{os.environ.get('RANK', '0')}" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    )
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", stage)[:80]
    path = (
        Path(root)
        / ".dvc"
        / "tmp"
        / "stage-locks"
        / f"{safe}-{hashlib.sha1(stage.encode()).hexdigest()[:8]}{rank}.lock"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StageBusy(
            f"stage {stage} is still running as pid {holder} (it holds {path}); wait for it to end "
            f"or stop it (kill {holder}) before running the stage again"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held["lock"] = fd
    return path


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state, parent pid, start time) of a process, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return fields[0], int(fields[1]), fields[19]


def _alive(pid: int, started: str) -> bool:
    st = _stat(pid)
    return (
        st is not None and st[0] not in "ZX" and st[2] == started
    )  # a zombie or a reused pid is gone


def _carries(pid: int, stage: str) -> bool:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"DVC_STAGE={stage}".encode() in env


def _is_dvc(pid: int) -> bool:
    """DVC itself as this pid (as in a container that runs `dvc repro` as its first process)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:4]
    except OSError:
        return False
    names = [os.path.basename(a) for a in argv]
    return b"dvc" in names or any(
        a == b"-m" and b == b"dvc" for a, b in zip(argv, argv[1:], strict=False)
    )


def launcher(stage: str) -> int:
    """The nearest ancestor without this DVC_STAGE in its environment: the process that ran the
    stage's command (DVC), above the shell and torchrun's agent, which inherit it."""
    pid = os.getppid()
    while pid > 1 and _carries(pid, stage):
        st = _stat(pid)
        if st is None:
            break
        pid = st[1]
    return pid


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in (
        os.listdir("/proc") if os.path.isdir("/proc") else []
    ):  # Linux; elsewhere none found
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            children.setdefault(st[1], []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _die(stage: str, why: str) -> None:
    """SIGKILL every descendant (again, for any forked meanwhile), then this process."""
    killed: set[int] = set()
    for _ in range(3):
        fresh = [p for p in descendants(os.getpid()) if p not in killed]
        if not fresh:
            break
        for pid in fresh:
            with_suppressed(os.kill, pid, signal.SIGKILL)
        killed.update(fresh)
    children = f" and its {len(killed)} child processes" if killed else ""
    with_suppressed(
        print,
        f"{stage}: {why}; stopping this stage (pid {os.getpid()}){children}, so that it cannot "
        "overwrite a later run's outputs",
        file=sys.stderr,
        flush=True,
    )
    os.kill(os.getpid(), signal.SIGKILL)


def with_suppressed(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except OSError:  # already gone; or stderr was a pipe to the dead DVC
        pass


def watch(stage: str) -> None:
    """Start the watchdog thread (and the parent-death signal where this is the main thread)."""
    parent, dvc = os.getppid(), launcher(stage)
    if 1 in (parent, dvc) and not _is_dvc(
        1
    ):  # orphaned while starting up: DVC died before this ran
        _die(stage, f"the process that started it is gone (parent pid {parent})")
    watched = {pid: st[2] for pid in (parent, dvc) if (st := _stat(pid)) is not None}
    wake = threading.Event()

    def gone() -> str | None:
        if dvc in watched and not _alive(dvc, watched[dvc]):
            return f"the DVC process that started it (pid {dvc}) is gone"
        if os.getppid() != parent:
            return f"its parent process (pid {parent}) is gone"
        return None

    def loop() -> None:
        while True:
            wake.wait(POLL_S)
            wake.clear()
            if (why := gone()) is not None:
                _die(stage, why)

    thread = threading.Thread(target=loop, name="stage-guard", daemon=True)
    thread.start()
    _held["thread"] = thread
    if threading.current_thread() is threading.main_thread() and sys.platform.startswith("linux"):
        signal.signal(
            signal.SIGUSR2, lambda *_: wake.set()
        )  # only re-checks: a spurious signal does nothing
        with_suppressed(
            ctypes.CDLL(None, use_errno=True).prctl, _PR_SET_PDEATHSIG, int(signal.SIGUSR2), 0, 0, 0
        )
        wake.set()  # the parent may have died just before the signal was armed
