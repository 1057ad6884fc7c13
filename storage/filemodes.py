"""Private data: directories 0700 and files 0600, for new data and for existing data dirs.

Everything below a data directory is either secret (root and cluster keys, access keys in the
metadata database, the audit log) or tenant data (encrypted shards, logs naming objects): no
other local user needs any of it. Processes set the umask 077 at start so whatever they
create is private, and tighten an existing data directory's modes once when they open it
(data dirs written before this rule were 0755/0644).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Collection
from pathlib import Path

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def restrict_umask() -> None:
    """New files and directories of this process (and its children) are owner-only."""
    os.umask(PRIVATE_UMASK)


def tighten(path: str | Path, st: os.stat_result) -> bool:
    """chmod one directory to 0700 or regular file to 0600 when it is not; True if changed."""
    if stat.S_ISDIR(st.st_mode):
        want = DIR_MODE
    elif stat.S_ISREG(st.st_mode):
        want = FILE_MODE
    else:
        return False  # sockets, fifos, symlinks: left alone (never followed)
    if stat.S_IMODE(st.st_mode) == want:
        return False
    with contextlib.suppress(FileNotFoundError, PermissionError):
        os.chmod(path, want, follow_symlinks=False)
        return True
    return False


def secure_tree(root: Path, skip: Collection[Path] = ()) -> int:
    """Make `root` and everything below it private, but the subtrees in `skip` (whose
    owners do it themselves); returns how many modes changed. Symlinks are not followed."""
    root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    skipped = {str(p) for p in skip}
    changed = int(tighten(root, os.stat(root)))
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(dirpath, d) not in skipped]
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            with contextlib.suppress(FileNotFoundError):
                changed += tighten(p, os.lstat(p))
    return changed


__all__ = ["DIR_MODE", "FILE_MODE", "restrict_umask", "secure_tree", "tighten"]
