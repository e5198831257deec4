"""File MD5s hashed once per node: a cache keyed by (st_dev, st_ino, size, mtime_ns), as DVC's own
state database keys its hashes, so a second pretraining start (or a frame verification after
mining) stats its files instead of reading every byte again. A whole file list's digest (the resume
key's) is cached too, under the MD5 of its paths' stats: a list seen before, nothing changed, costs
a stat pass and one lookup, not one lookup per file.

The cache is a node-local SQLite file, `$DEMYSTIFY_DIGESTS` or ~/.cache/demystify/digests.sqlite
(keep it off NFS: SQLite's locking there is unreliable). Many processes may read and fill it at
once (WAL, a busy timeout). A cache that cannot be opened or written falls back to plain hashing
with one stderr line: it changes speed, never a digest, and never fails a run.

A file is cached only once its mtime is RACY_S in the past (git's "racily clean" rule): a file
rewritten within one timestamp tick of being hashed, same size and inode, would otherwise keep its
old digest. Like DVC's, the cache trusts (inode, size, mtime): a tool that rewrites a file in
place to the same size and then sets its old mtime back is not noticed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path

from demystify.core.io import file_md5 as plain_md5

ENV = "DEMYSTIFY_DIGESTS"
RACY_S = 2.0  # seconds: newer files are hashed but not cached
_BATCH = 500  # inodes per SELECT (under the 999 variables of older SQLite builds)
_DENSE = 4  # a range scan when the inodes span at most this many times their count


def default_path() -> Path:
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "demystify" / "digests.sqlite")


class DigestCache:
    """MD5s by (device, inode, size, mtime_ns). `hits` and `misses` count lookups since opening;
    `hashed_bytes` what was read to fill the misses."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_path()
        self.hits = self.misses = self.hashed_bytes = 0
        self._db: sqlite3.Connection | None = None
        self._warned = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "PRAGMA synchronous=NORMAL"
            )  # a lost last write costs one rehash, never a wrong digest
            db.execute(
                "CREATE TABLE IF NOT EXISTS md5 (dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,"
                " md5 TEXT NOT NULL, PRIMARY KEY (dev, ino)) WITHOUT ROWID"
            )
            # a whole file list's digest by the fingerprint of its paths' stats (list_digest)
            db.execute(
                "CREATE TABLE IF NOT EXISTS lists (fingerprint TEXT PRIMARY KEY, digest TEXT NOT NULL)"
                " WITHOUT ROWID"
            )
            self._db = db
        except (sqlite3.Error, OSError) as exc:
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        if not self._warned:
            print(
                f"digests: cannot use the digest cache {self.path} ({type(exc).__name__}: {exc}); "
                f"hashing every file in full (set ${ENV} to a writable node-local file)",
                file=sys.stderr,
            )
            self._warned = True
        if self._db is not None:
            self._db.close()
        self._db = None

    def md5(self, path: str | Path) -> str:
        """One file's MD5 (a function taking a path, for readers that go file by file)."""
        return self.md5s([path])[str(path)]

    def md5s(self, paths: Iterable[str | Path]) -> dict[str, str]:
        """{str(path): MD5} for many files: every file is stat'ed, the cache asked in one read
        transaction, the misses hashed and written in one write transaction. Raises the OSError
        of a file that cannot be stat'ed or read, as plain hashing would."""
        paths = list(dict.fromkeys(str(p) for p in paths))
        stats = {p: os.stat(p) for p in paths}
        found = self._lookup(stats)
        now = time.time_ns()
        fresh = []
        out = {}
        for p in paths:
            st = stats[p]
            if p in found:
                out[p] = found[p]
                continue
            out[p] = plain_md5(p)
            self.hashed_bytes += st.st_size
            if os.stat(p).st_mtime_ns == st.st_mtime_ns and now - st.st_mtime_ns >= RACY_S * 1e9:
                fresh.append(
                    (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, out[p])
                )  # unchanged while read
        self.hits += len(found)
        self.misses += len(paths) - len(found)
        self._store(fresh)
        return out

    def _lookup(self, stats: dict[str, os.stat_result]) -> dict[str, str]:
        if self._db is None or not stats:
            return {}
        by_key = {(st.st_dev, st.st_ino): (st.st_size, st.st_mtime_ns) for st in stats.values()}
        rows: list[tuple] = []
        try:
            self._db.execute("BEGIN")
            try:
                for dev, inodes in _by_device(by_key).items():
                    for i in range(0, len(inodes), _BATCH):
                        rows += self._rows(dev, inodes[i : i + _BATCH])
            finally:
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._give_up(exc)
            return {}
        md5 = {
            (dev, ino): digest
            for dev, ino, size, mtime_ns, digest in rows
            if by_key.get((dev, ino)) == (size, mtime_ns)
        }
        # every path of a cached inode (hard links, a path given twice) has its digest
        return {p: md5[k] for p, st in stats.items() if (k := (st.st_dev, st.st_ino)) in md5}

    def _rows(self, dev: int, inodes: list[int]) -> list[tuple]:
        """The entries of `inodes` (sorted) of one device. A corpus written at once has nearly
        consecutive inodes: one range scan of the primary key reads them all (the rows between
        that belong to other files are dropped by the caller); scattered inodes are asked one by one."""
        lo, hi = inodes[0], inodes[-1]
        if hi - lo <= _DENSE * len(inodes):
            return self._db.execute(
                "SELECT dev, ino, size, mtime_ns, md5 FROM md5 WHERE dev = ? AND ino BETWEEN ? AND ?",
                (dev, lo, hi),
            ).fetchall()
        marks = ",".join("?" * len(inodes))
        return self._db.execute(
            f"SELECT dev, ino, size, mtime_ns, md5 FROM md5 WHERE dev = ? AND ino IN ({marks})",
            (dev, *inodes),
        ).fetchall()

    def _store(self, rows: list[tuple]) -> None:
        if self._db is None or not rows:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO md5 VALUES (?, ?, ?, ?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._give_up(exc)

    def list_digest(self, paths: Iterable[str | Path]) -> str:
        """One MD5 over `path\0MD5\n` of every distinct path, sorted. A list seen before, every file
        unchanged, costs a stat pass and one lookup: its digest is cached under the MD5 of the
        paths' (device, inode, size, mtime_ns), as each file's is."""
        paths = sorted({str(p) for p in paths})
        stats = [os.stat(p) for p in paths]
        fingerprint = hashlib.md5(
            "".join(
                f"{p}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\n"
                for p, st in zip(paths, stats, strict=True)
            ).encode()
        ).hexdigest()
        known = self._get_list(fingerprint)
        if known is not None:
            self.hits += len(paths)
            return known
        md5 = self.md5s(paths)
        h = hashlib.md5()
        for p in paths:
            h.update(f"{p}\0{md5[p]}\n".encode())
        oldest = time.time_ns() - RACY_S * 1e9
        if all(
            st.st_mtime_ns <= oldest for st in stats
        ):  # as md5s: no file written in the last seconds
            self._put_list(fingerprint, h.hexdigest())
        return h.hexdigest()

    def member_md5s(self, archive: str | Path) -> dict[str, str]:
        """The MD5 of every member of a zip archive (frames_store's one zip per video), cached under the
        archive's (device, inode, size, mtime_ns) as a file's digest is: verifying a pairs manifest's
        frames after mining reads each archive's members once per node."""
        st = os.stat(archive)
        fingerprint = hashlib.md5(
            f"zip\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}".encode()
        ).hexdigest()
        known = self._get_list(fingerprint)
        if known is not None:
            self.hits += 1
            return json.loads(known)
        with zipfile.ZipFile(archive) as z:
            md5 = {name: hashlib.md5(z.read(name)).hexdigest() for name in z.namelist()}
        if (
            st.st_mtime_ns <= time.time_ns() - RACY_S * 1e9
        ):  # as md5s: not an archive written seconds ago
            self._put_list(fingerprint, json.dumps(md5, sort_keys=True))
        return md5

    def _get_list(self, fingerprint: str) -> str | None:
        if self._db is None:
            return None
        try:
            row = self._db.execute(
                "SELECT digest FROM lists WHERE fingerprint = ?", (fingerprint,)
            ).fetchone()
        except sqlite3.Error as exc:
            self._give_up(exc)
            return None
        return row[0] if row else None

    def _put_list(self, fingerprint: str, digest: str) -> None:
        if self._db is None:
            return
        try:
            self._db.execute("INSERT OR REPLACE INTO lists VALUES (?, ?)", (fingerprint, digest))
        except sqlite3.Error as exc:
            self._give_up(exc)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _by_device(keys) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for dev, ino in keys:
        out.setdefault(dev, []).append(ino)
    return {dev: sorted(inodes) for dev, inodes in out.items()}


_shared: dict[tuple[Path, int], DigestCache] = {}


def cache() -> DigestCache:
    """This process's cache at default_path(), opened once per path and process (a forked child
    opens its own: an SQLite connection must not cross a fork)."""
    key = (default_path(), os.getpid())
    if key not in _shared:
        _shared[key] = DigestCache(key[0])
    return _shared[key]


def file_md5(path: str | Path) -> str:
    """One file's MD5 through the node's cache."""
    return cache().md5(path)


def file_md5s(paths: Iterable[str | Path]) -> dict[str, str]:
    """Many files' MD5s through the node's cache, in one batch ({str(path): MD5})."""
    return cache().md5s(paths)


def list_digest(paths: Iterable[str | Path]) -> str:
    """A file list's digest through the node's cache (DigestCache.list_digest)."""
    return cache().list_digest(paths)


def member_md5s(archive: str | Path) -> dict[str, str]:
    """A zip archive's member MD5s through the node's cache (DigestCache.member_md5s)."""
    return cache().member_md5s(archive)
