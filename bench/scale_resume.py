"""A second pretraining start's hashing at scale: the resume key's data digest (ssl/resume.py) over
N synthetic training files, first start (every file read, the node's digest cache filled), second
start (a new cache connection, as a new process has: the list's digest found by its stats'
fingerprint) and, of it, the files' digest without the items' JSON; a plain stat pass over the same
files (the floor a second start can reach), and the old way (every byte read at every start).

    python bench/scale_resume.py                   # 200,000 files of 1 KiB in a temporary folder
    python bench/scale_resume.py --files 20000 --size 110000   # ImageNet's mean JPEG size

The files are written first (their mtime set an hour back: digests.RACY_S caches only files not
written in the last seconds, as a corpus is) and are in the page cache when hashed, so the first
start and the old way read from memory here: on a cold disk both are slower, the second start not.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from demystify.core import digests
from demystify.core.io import file_md5


def make_files(root: Path, n: int, size: int) -> list[str]:
    """n files of `size` distinct bytes, 1,000 per folder (as ImageNet's class folders hold ~1,300)."""
    past = time.time() - 3600
    block = os.urandom(size)
    files = []
    for i in range(n):
        folder = root / f"{i // 1000:04d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
        path = folder / f"{i:07d}.jpg"
        path.write_bytes(i.to_bytes(8, "little") + block[8:])
        os.utime(path, (past, past))
        files.append(str(path))
    return files


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--files", type=int, default=200_000, help="training files (default 200,000)")
    ap.add_argument("--size", type=int, default=1024, help="bytes per file (default 1 KiB)")
    ap.add_argument(
        "--dir", default=None, help="where to write them (default: a temporary folder, removed)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scale_resume_", dir=args.dir) as tmp:
        tmp = Path(tmp)
        os.environ[digests.ENV] = str(tmp / "digests.sqlite")  # this run's cache alone
        from demystify.ssl import resume
        from demystify.ssl.datasets import Item

        made, files = timed(lambda: make_files(tmp / "corpus", args.files, args.size))
        items = [Item(f) for f in files]
        print(
            f"{args.files} files of {args.size} B written in {made:.1f} s; {os.cpu_count()} CPUs "
            f"({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
            f"SQLite {digests.sqlite3.sqlite_version}"
        )

        first, key1 = timed(lambda: resume.data_digest(items, files))
        first_cache = digests.cache()
        digests._shared.clear()  # a new process's start: its own connection to the same cache file
        second, key2 = timed(lambda: resume.data_digest(items, files))
        second_cache = digests.cache()
        digests._shared.clear()
        lookup, _ = timed(
            lambda: digests.list_digest(files)
        )  # the files alone, without the items' JSON
        stat, _ = timed(lambda: [os.stat(f) for f in files])
        old, _ = timed(lambda: [file_md5(f) for f in sorted(files)])
        assert key1 == key2, "the second start's digest differs from the first's"
        assert second_cache.misses == 0 and second_cache.hashed_bytes == 0, (
            "the second start read files"
        )
        per = 1e6 / args.files
        print(
            f"first start (hash every file, fill the cache): {first:8.2f} s  ({first * per:6.1f} us/file; "
            f"{first_cache.misses} read, {first_cache.hashed_bytes / 2**20:.0f} MiB)"
        )
        print(
            f"second start (cache hits, stat only):          {second:8.2f} s  ({second * per:6.1f} us/file; "
            f"{second_cache.hits} hits, 0 bytes read)"
        )
        print(
            f"  of which the files' digest (stat + lookup):  {lookup:8.2f} s  ({lookup * per:6.1f} us/file)"
        )
        print(
            f"plain stat pass over the same files:           {stat:8.2f} s  ({stat * per:6.1f} us/file)"
        )
        print(
            f"the old way (MD5 of every byte, every start):  {old:8.2f} s  ({old * per:6.1f} us/file)"
        )
        cache_mib = (
            sum(f.stat().st_size for f in tmp.glob("digests.sqlite*")) / 2**20
        )  # with its WAL
        print(f"second start / stat pass: {second / stat:.2f}x; cache file {cache_mib:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
