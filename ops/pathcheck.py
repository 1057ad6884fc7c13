"""A file-system error on a path the operator gave, said in one line with what to do.

`tessera volume export v /nonexistent/dir/x.raw` printed `[Errno 2] No such file or directory:
'/nonexistent/dir/x.raw'`; every command's OSError goes through `explain` instead.
"""

from __future__ import annotations

from pathlib import Path


def explain(exc: OSError) -> str:
    """What went wrong with `exc.filename` and what to do; str(exc) for errors with no path."""
    if not exc.filename:
        return str(exc)
    path = Path(str(exc.filename))
    if isinstance(exc, FileNotFoundError):
        missing = next((p for p in reversed(path.parents) if not p.exists()), None)
        if missing is not None:
            return (f"{path}: directory {missing} does not exist; create it (mkdir -p "
                    f"{path.parent}) or give a path in an existing directory")
        return f"{path}: no such file or directory; check the path"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a directory; give a file name"
    if isinstance(exc, NotADirectoryError):
        return f"{path}: a part of this path is a file, not a directory; check the path"
    if isinstance(exc, PermissionError):
        return (f"{path}: permission denied; give a path this user may use, or change its "
                "permissions")
    return f"{path}: {exc.strerror or exc}"
