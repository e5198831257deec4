"""Hash once: file MD5s cached by (device, inode, size, mtime_ns) in a node-local SQLite file. A second
digest of the same files reads no byte; a modified or replaced file is rehashed; a cache that cannot
be opened only costs speed; the resume key, the frame check and the pairs manifest's MD5s use it,
and under DDP one process per node fills it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from demystify.core import digests
from demystify.core.io import file_md5
from demystify.pairs.mine import with_frame_hashes
from demystify.ssl import resume
from demystify.ssl.datasets import DataError, Item, pair_items

ROOT = Path(__file__).resolve().parents[1]
HOUR_AGO = time.time() - 3600


def _files(folder: Path, n: int, size: int = 300) -> list[Path]:
    """n files of distinct bytes, their mtime an hour ago (older than digests.RACY_S)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"{i:04d}.bin"
        path.write_bytes(bytes([i % 251]) * (size - 8) + i.to_bytes(8, "little"))
        os.utime(path, (HOUR_AGO, HOUR_AGO))
        out.append(path)
    return out


@pytest.mark.parametrize("dense", [digests._DENSE, 0], ids=["range_scan", "scattered_inodes"])
def test_a_second_digest_reads_no_byte_and_a_changed_file_is_rehashed(tmp_path, monkeypatch, dense):
    monkeypatch.setattr(digests, "_DENSE", dense)  # 0: every lookup by its inodes, never a range
    files = _files(tmp_path / "data", 50)
    truth = {str(f): file_md5(f) for f in files}
    first = digests.DigestCache(tmp_path / "d.sqlite")
    assert first.md5s(files) == truth
    assert (first.hits, first.misses, first.hashed_bytes) == (0, 50, 50 * 300)

    again = digests.DigestCache(tmp_path / "d.sqlite")  # another process's start: a new connection
    assert again.md5s(files) == truth
    assert (again.hits, again.misses, again.hashed_bytes) == (50, 0, 0)

    # modified in place: same inode, same size, a new mtime (still in the past)
    inode = files[3].stat().st_ino
    files[3].write_bytes(b"x" * 300)
    os.utime(files[3], (HOUR_AGO + 10, HOUR_AGO + 10))
    assert files[3].stat().st_ino == inode
    # replaced: a new file renamed over the old one, same size and the OLD mtime
    (tmp_path / "new.bin").write_bytes(b"y" * 300)
    os.utime(tmp_path / "new.bin", (HOUR_AGO, HOUR_AGO))
    os.replace(tmp_path / "new.bin", files[7])
    assert files[7].stat().st_mtime_ns == files[8].stat().st_mtime_ns
    third = digests.DigestCache(tmp_path / "d.sqlite")
    got = third.md5s(files)
    assert got[str(files[3])] == file_md5(files[3]) != truth[str(files[3])]
    assert got[str(files[7])] == file_md5(files[7]) != truth[str(files[7])]
    assert {k: v for k, v in got.items() if k not in (str(files[3]), str(files[7]))} == {
        k: v for k, v in truth.items() if k not in (str(files[3]), str(files[7]))
    }
    assert (third.hits, third.misses, third.hashed_bytes) == (48, 2, 600)
    fourth = digests.DigestCache(tmp_path / "d.sqlite")
    assert fourth.md5s(files) == got and fourth.misses == 0  # the rehashed ones are cached anew


def test_a_file_list_seen_before_is_one_lookup_and_any_change_misses_it(tmp_path):
    """A second start's whole list: a stat pass and one lookup; one file changed: the list misses and
    that file alone is read again."""
    import hashlib

    files = _files(tmp_path / "data", 30)
    expected = hashlib.md5(
        "".join(f"{f}\0{file_md5(f)}\n" for f in sorted(map(str, files))).encode()
    ).hexdigest()
    assert digests.DigestCache(tmp_path / "d.sqlite").list_digest(files) == expected
    again = digests.DigestCache(tmp_path / "d.sqlite")
    assert again.list_digest(reversed(files)) == expected  # the order given does not matter
    assert (again.hits, again.misses, again.hashed_bytes) == (30, 0, 0)
    files[4].write_bytes(b"q" * 300)
    os.utime(files[4], (HOUR_AGO + 7, HOUR_AGO + 7))
    third = digests.DigestCache(tmp_path / "d.sqlite")
    changed = third.list_digest(files)
    assert changed != expected and (third.hits, third.misses, third.hashed_bytes) == (29, 1, 300)
    assert (
        changed
        == hashlib.md5(
            "".join(f"{f}\0{file_md5(f)}\n" for f in sorted(map(str, files))).encode()
        ).hexdigest()
    )
    (tmp_path / "data" / "new.bin").write_bytes(
        b"n" * 10
    )  # written just now: neither it nor its list is cached
    fresh = [*files, tmp_path / "data" / "new.bin"]
    digests.DigestCache(tmp_path / "d.sqlite").list_digest(fresh)
    last = digests.DigestCache(tmp_path / "d.sqlite")
    last.list_digest(fresh)
    assert (last.hits, last.misses) == (30, 1)


def test_a_file_written_just_now_is_hashed_but_not_cached(tmp_path):
    """Within RACY_S of its mtime a file could still change within the same timestamp tick."""
    fresh = tmp_path / "fresh.bin"
    fresh.write_bytes(b"a" * 100)
    cache = digests.DigestCache(tmp_path / "d.sqlite")
    assert cache.md5(fresh) == file_md5(fresh)
    fresh.write_bytes(b"b" * 100)  # same size, maybe the same mtime tick
    assert cache.md5(fresh) == file_md5(fresh)
    assert (cache.hits, cache.misses) == (0, 2)


def test_hard_links_and_repeated_paths_share_one_entry(tmp_path):
    (a,) = _files(tmp_path, 1)
    os.link(a, tmp_path / "link.bin")
    cache = digests.DigestCache(tmp_path / "d.sqlite")
    got = cache.md5s([a, tmp_path / "link.bin", a])
    assert got == {str(a): file_md5(a), str(tmp_path / "link.bin"): file_md5(a)}
    again = digests.DigestCache(tmp_path / "d.sqlite")
    assert again.md5s([tmp_path / "link.bin", a]) == got and again.misses == 0


def test_a_cache_that_cannot_be_opened_falls_back_with_one_line(tmp_path, capsys):
    files = _files(tmp_path / "data", 3)
    (tmp_path / "blocker").write_text("a file where the cache's folder would be")
    cache = digests.DigestCache(tmp_path / "blocker" / "d.sqlite")
    assert cache.md5s(files) == {str(f): file_md5(f) for f in files}
    assert cache.md5s(files) == {str(f): file_md5(f) for f in files}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"digests: cannot use the digest cache {tmp_path}/blocker/d.sqlite ("
    )
    assert "hashing every file in full" in err[0]
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)  # a damaged cache file
    assert digests.DigestCache(tmp_path / "junk.sqlite").md5s(files) == {
        str(f): file_md5(f) for f in files
    }
    assert "digests: cannot use the digest cache" in capsys.readouterr().err
    with pytest.raises(
        FileNotFoundError
    ):  # a missing file is the reader's error, as without a cache
        digests.DigestCache(tmp_path / "d.sqlite").md5s([tmp_path / "gone.bin"])


FILL = textwrap.dedent("""
    import json, sys
    from demystify.core import digests
    cache = digests.DigestCache(sys.argv[1])
    got = cache.md5s(sys.argv[2:])
    print(json.dumps({"md5": got, "hits": cache.hits, "misses": cache.misses}))
""")


def test_processes_fill_and_read_one_cache_at_once(tmp_path):
    files = [str(f) for f in _files(tmp_path / "data", 400, size=2000)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FILL, str(tmp_path / "d.sqlite"), *files[i::2], *files[:50]],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    truth = {f: file_md5(f) for f in files}
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0 and err == "", err
        assert json.loads(out)["md5"] == {f: truth[f] for f in json.loads(out)["md5"]}
    last = digests.DigestCache(tmp_path / "d.sqlite")
    assert last.md5s(files) == truth and (last.hits, last.misses) == (400, 0)


def test_the_resume_key_digest_is_the_plain_one_and_hashed_once_per_node(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv(digests.ENV, str(tmp_path / "node.sqlite"))
    files = [str(f) for f in _files(tmp_path / "data", 20)]
    items = [Item(f) for f in files]
    expected = hashlib.md5(
        json.dumps([list(vars(it).values()) for it in items], default=str).encode()
    )
    listed = hashlib.md5()
    for f in sorted(files):
        listed.update(f"{f}\0{file_md5(f)}\n".encode())
    expected.update(listed.hexdigest().encode())
    waited = []
    assert (
        resume.node_data_digest(items, files, first=True, barrier=lambda: waited.append(1))
        == expected.hexdigest()
    )
    assert waited == [1]
    assert resume.data_digest(items, files) == expected.hexdigest()
    # another process of the node, after the barrier (its own connection): every file a hit, no byte read
    monkeypatch.setattr(digests, "_shared", {})
    assert (
        resume.node_data_digest(items, files, first=False, barrier=lambda: None)
        == expected.hexdigest()
    )
    assert (digests.cache().hits, digests.cache().misses, digests.cache().hashed_bytes) == (
        20,
        0,
        0,
    )
    # one process alone: no barrier
    assert resume.node_data_digest(items, files, first=False, barrier=None) == expected.hexdigest()


def test_pairs_hashes_and_the_frame_check_share_the_cache(tmp_path, monkeypatch):
    """mine_pairs records the frames' MD5s; pretraining's check of them then reads no frame, and a
    frame changed since (same size, new mtime) is still found."""
    monkeypatch.setenv(digests.ENV, str(tmp_path / "node.sqlite"))
    frames = tmp_path / "frames"
    _files(frames / "v", 6)
    names = [f"v/{i:04d}.bin" for i in range(6)]
    pairs = pd.DataFrame({"path_a": names[:-1], "path_b": names[1:]})
    hashed = with_frame_hashes(pairs, frames)
    assert hashed["md5_a"].tolist() == [file_md5(frames / n) for n in names[:-1]]
    hashed.to_parquet(tmp_path / "pairs.parquet")
    before = digests.cache().hits
    items = pair_items(tmp_path / "pairs.parquet", frames, crops=False)
    assert [it.path_b for it in items] == [str(frames / n) for n in names[1:]]
    assert digests.cache().hits - before == 6
    (frames / names[2]).write_bytes(b"z" * 300)
    os.utime(frames / names[2], (HOUR_AGO + 5, HOUR_AGO + 5))
    with pytest.raises(
        DataError,
        match=r"pairs\.parquet: 1 frame\(s\) changed since the pairs were mined, e\.g\. v/0002",
    ):
        pair_items(tmp_path / "pairs.parquet", frames, crops=False)


GLOO = textwrap.dedent("""
    import json, os, sys
    import torch.distributed as dist
    from demystify.core import digests
    from demystify.ssl import resume
    from demystify.ssl.datasets import Item
    rank = int(sys.argv[1])
    dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=rank, world_size=2)
    files = sys.argv[3:]
    d = resume.node_data_digest([Item(f) for f in files], files, first=rank == 0, barrier=dist.barrier)
    c = digests.cache()
    print(json.dumps([d, c.hits, c.misses]))
    dist.destroy_process_group()
""")


def test_two_gloo_processes_of_one_node_hash_once(tmp_path):
    """Under DDP: local rank 0 hashes, the real barrier, then rank 1 finds every file cached."""
    files = [str(f) for f in _files(tmp_path / "data", 30)]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        digests.ENV: str(tmp_path / "node.sqlite"),
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", GLOO, str(r), str(tmp_path / "store"), *files],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    (d0, hits0, misses0), (d1, hits1, misses1) = (json.loads(out) for out, _ in outs)
    assert d0 == d1 == resume.data_digest([Item(f) for f in files], files)
    assert (hits0, misses0) == (0, 30) and (hits1, misses1) == (30, 0)


def test_a_zips_member_md5s_are_read_once_and_a_rewritten_zip_again(tmp_path):
    """Zipped frames (frames_store): the frame check after mining reads each archive once per node."""
    import hashlib
    import zipfile

    archive = tmp_path / "video.zip"

    def write(payload: bytes, mtime: float) -> None:
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
            z.writestr("000000.jpg", payload)
            z.writestr("000001.jpg", payload + b"!")
        os.utime(archive, (mtime, mtime))

    write(b"frame", HOUR_AGO)
    truth = {
        "000000.jpg": hashlib.md5(b"frame").hexdigest(),
        "000001.jpg": hashlib.md5(b"frame!").hexdigest(),
    }
    assert digests.DigestCache(tmp_path / "d.sqlite").member_md5s(archive) == truth
    again = digests.DigestCache(tmp_path / "d.sqlite")
    assert again.member_md5s(archive) == truth and again.hits == 1
    write(b"other", HOUR_AGO + 10)  # rewritten: a new mtime
    assert again.member_md5s(archive)["000000.jpg"] == hashlib.md5(b"other").hexdigest()
