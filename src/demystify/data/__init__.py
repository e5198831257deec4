"""Readers for public data-set layouts: GOT-10k (got10k) and TrackingNet's box files (trackingnet).

Shared by the readers: `read_list` (a list file's text, UTF-8) and `check_entry` (a name read from
a list file must stay inside the data root). Both raise the calling reader's own error type, with
the list file named, so a stage reports them as one line.
"""

from __future__ import annotations

from pathlib import Path, PurePath


def read_list(path: str | Path, error: type[Exception]) -> str:
    """The text of a list or label file. Missing, unreadable (a folder, no permission) or not
    UTF-8: `error`, naming the file (and the line of the first bad byte)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
    # what Path.read_text gave: universal newlines
    return text.replace("\r\n", "\n").replace("\r", "\n")


def check_entry(entry: str, list_path: str | Path, error: type[Exception]) -> str:
    """`entry`, a relative name read from `list_path`, when joining it to its folder cannot leave
    that folder: no absolute path, no '..' part, no NUL byte. Otherwise `error`, naming the list
    file and the entry. (Lexical on purpose: a symlink the data's owner put inside the root, such as
    DVC's symlink cache, is followed like any other file.)"""
    parts = PurePath(entry).parts
    if not entry or "\0" in entry or PurePath(entry).is_absolute() or ".." in parts:
        raise error(
            f"{list_path}: entry {entry!r} points outside its folder (an absolute path or '..')"
        )
    return entry
