"""A small record file of a pack store (`packs/dropped`, `packs/unsure`): a head line naming
it with the crc32c of its body, written to a temporary file, fsynced, renamed over the old
one and its directory fsynced, so a crash leaves the old record or the new one, never half.

Why a module of its own: each such record is the store's memory across a restart of
something its packs alone cannot show; one way to write and check them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import crc32c

from nodes.shardfile import fsync_dir


def write_record(path: Path, head: bytes, body: bytes) -> None:
    """Replace `path` with `head` + crc + `body`, durably (OSError: the old one stays)."""
    raw = head + f"{crc32c.crc32c(body):08x}\n".encode() + body
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            done = 0
            while done < len(raw):  # a short write would leave a record that fails its check
                done += os.write(fd, raw[done:])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # (ENOSPC: the temporary file must not keep the blocks it took)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def read_record(path: Path, head: bytes) -> tuple[bool, bytes | None]:
    """(whether `path` exists, its body if it checks, else None)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return False, None
    first, _, body = raw.partition(b"\n")
    if not first.startswith(head) or first[len(head):] != f"{crc32c.crc32c(body):08x}".encode():
        return True, None
    return True, body


def pairs(body: bytes) -> list[tuple[int, int]] | None:
    """The body's lines as pairs of integers (None: a line is not one)."""
    try:
        return [(int(a), int(b)) for a, b in (line.split() for line in body.splitlines())]
    except ValueError:
        return None


def encode_pairs(items: list[tuple[int, int]]) -> bytes:
    return "".join(f"{a} {b}\n" for a, b in items).encode()


def overwrite_record(path: Path, head: bytes, body: bytes) -> None:
    """`write_record`, but a record of the same length as the one there is rewritten in
    place: no new block is taken, so a full disk (where compaction makes the pack that frees
    space) still records it. A torn rewrite fails the record's check when read (its
    readers treat that as no record), never a wrong value."""
    raw = head + f"{crc32c.crc32c(body):08x}\n".encode() + body
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        write_record(path, head, body)
        return
    try:
        if os.fstat(fd).st_size != len(raw):
            os.close(fd)
            fd = -1
            write_record(path, head, body)
            return
        if os.pwrite(fd, raw, 0) != len(raw):
            raise OSError(f"short write of {path}")
        os.fsync(fd)
    finally:
        if fd >= 0:
            os.close(fd)

