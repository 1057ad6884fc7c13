"""A one-line progress display on a terminal's stderr (nothing when stderr is not a terminal),
shared by the long CLI passes: volume import/export/flatten (a bar in MiB) and `tessera fsck`
(counts of an unknown total)."""

from __future__ import annotations

import sys
import time

MiB = 1 << 20


class Progress:
    """A progress bar in MiB with the rate so far: the count of extents it showed (`48/48`)
    said neither what nor how fast. `count` shows a running count when the total is unknown."""

    def __init__(self, label: str, total_bytes: int = 0, extent_size: int = 1) -> None:
        self.label = label
        self.total_bytes = total_bytes
        self.extent_size = extent_size
        self.tty = sys.stderr.isatty()
        self.start = time.monotonic()
        self.open = False  # a count line is showing (end it before other output)

    def __call__(self, done: int, total: int) -> None:
        """Extent `done` (0-based) of `total` is being handled."""
        if self.tty and total and (done % 16 == 0 or done == total - 1):
            sys.stderr.write(f"\r{self.line(done, total, time.monotonic() - self.start)}")
            sys.stderr.flush()
            if done == total - 1:
                sys.stderr.write("\n")

    def line(self, done: int, total: int, elapsed: float) -> str:
        """The bar after extent `done` of `total`, `elapsed` seconds in."""
        bar = int(30 * (done + 1) / total)
        moved = min((done + 1) * self.extent_size, self.total_bytes)
        rate = f"{moved / MiB / elapsed:.1f} MiB/s" if elapsed > 0 else "- MiB/s"
        return (f"{self.label} [{'#' * bar}{' ' * (30 - bar)}] {moved / MiB:.1f}/"
                f"{self.total_bytes / MiB:.1f} MiB, {rate}")

    def count(self, what: str, done: int) -> None:
        """`done` items of `what` so far (total unknown), with the rate since the start."""
        if self.tty:
            elapsed = time.monotonic() - self.start
            rate = f"{done / elapsed:.0f}/s" if elapsed > 0 else "-/s"
            sys.stderr.write(f"\r{self.label}: {what} {done} ({rate})\x1b[K")
            sys.stderr.flush()
            self.open = True

    def end(self) -> None:
        """End a count line, so what is printed next starts on its own line."""
        if self.open:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.open = False
