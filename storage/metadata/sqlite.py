"""SQLite backend of the metadata interface: one WAL-mode file, group-committed writes.

Writes from concurrent requests are gathered into one transaction (one fsync) by a single
committer; a failed compare affects only its own operation (each compares before it writes),
and an operation that raises is left out and the rest committed without it. Reads use other connections (WAL readers never block the writer) and see
every write whose call has returned: point reads run inline on the event loop thread (an
indexed lookup of one row costs less than the thread hop it would need), range reads on a
reader thread. Several processes may share the file: the revision
counter is read inside each write transaction. Bucket records (read by every request) and
current object records (read by every GET and HEAD) are kept in memory between reads, each
kind valid while a counter shared by every process that opens the file (`sharedgen.py`,
`<file>.bucketgen`, `<file>.objectgen`) is unchanged: a store that writes a record of that
kind advances it after the commit, before the write returns. Revisions come from one global
counter, as in etcd, so a compare-and-swap works across keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from storage.errors import ConfigError, Overloaded, StorageFull
from storage.keyspace import BUCKET, OBJECT, is_auth_record, pack
from storage.metadata import Item, Txn
from storage.metadata.fence import check, fenced
from storage.metadata.sharedgen import SharedGeneration

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL, rev INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0);
"""
MAX_BATCH = 512
SQLITE_FULL = getattr(sqlite3, "SQLITE_FULL", 13)  # "database or disk is full"
# growing the WAL index (<db>-shm) failed: on a full disk, the first opener of a database
# (it truncates -shm) cannot read it at all, and a running one cannot grow its WAL index
SQLITE_IOERR_SHMSIZE = getattr(sqlite3, "SQLITE_IOERR_SHMSIZE", 4874)
_NO_SPACE = (SQLITE_FULL, SQLITE_IOERR_SHMSIZE)
SQLITE_BUSY = getattr(sqlite3, "SQLITE_BUSY", 5)  # primary code of every BUSY_* extended one
BUSY_TIMEOUT_S = 5.0  # how long a statement waits for another process's lock (as sqlite3's)
CACHED = pack(BUCKET)  # the keys kept in memory between reads: bucket records ...
CACHED_OBJECTS = pack(OBJECT)  # ... and current object records, each kind with its counter
CACHE_TTL_S = 2.0  # a cached record's longest life (only a writer killed between its
#                    commit and its bump of the counter leaves one stale: this bounds it)
CACHE_MAX = 4096  # bucket records kept; beyond, the cache starts over
OBJECT_CACHE_MAX = 1024  # object records kept (values up to OBJECT_CACHE_BYTES only)
OBJECT_CACHE_BYTES = 16384  # an inline 4 KiB object's record is ~4.7 KB

_BUCKETS, _OBJECTS, _AUTH = 1, 2, 4  # which counters a write advances (a bit each)
_Op = Callable[[sqlite3.Connection, Callable[[], int]], Any]
_Pending = tuple[_Op, "asyncio.Future[Any]", int]  # op, its caller's future, counter bits


class _OpFailed(Exception):
    """Op `index` of a batch raised `error` (not an SQLite error): the batch is redone
    without it."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index, error)
        self.index, self.error = index, error


def _kinds(keys: tuple[bytes, ...]) -> int:
    """The counter bits of the cached kinds among `keys`."""
    bits = 0
    for k in keys:
        if k.startswith(CACHED):
            bits |= _BUCKETS
        elif k.startswith(CACHED_OBJECTS):
            bits |= _OBJECTS
        elif is_auth_record(k):
            bits |= _AUTH
    return bits


@contextlib.contextmanager
def _full_is_storage_full(path: str | Path) -> Iterator[None]:
    """SQLite's "no space" errors as StorageFull (503 to S3 clients, one line at a start),
    naming what is full and what to do; "database is locked" (another process held the
    write lock past the busy timeout: a long commit on a loaded disk, a process stopped in
    one) as Overloaded, a StorageError its callers retry (a block daemon's lease renewal
    loop, its journal appender and folder died on the raw error, silently); other SQLite
    errors pass unchanged."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == SQLITE_BUSY:
            # no path in it: S3 clients see this message (SlowDown)
            raise Overloaded(f"the metadata store is busy: another process held its lock "
                             f"over {BUSY_TIMEOUT_S:g} s ({exc}); retry") from None
        if code not in _NO_SPACE:
            raise
        raise StorageFull(f"the metadata store's disk is full ({exc}: "
                          f"{getattr(exc, 'sqlite_errorname', '')} on {path}): free space on "
                          "its file system") from None


def _configure(conn: sqlite3.Connection) -> None:
    """WAL, full fsync, zeroed free space: every connection of a store (raises on a file
    that is not SQLite)."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA secure_delete=ON")  # freed record space is zeroed (crypto-shred)


class SqliteStore:
    inline_apart = False  # inline bodies stay in their records (storage/inline_bodies.py)
    # `auth_stamp` has changed for every process once an auth write returned (one host, a
    # shared counter bumped before the write returns): TenantService.settled need not wait
    auth_stamp_exact = True

    def __init__(self, writer: sqlite3.Connection, reader: sqlite3.Connection,
                 wpool: ThreadPoolExecutor, rpool: ThreadPoolExecutor,
                 point: sqlite3.Connection | None = None,
                 generation: SharedGeneration | None = None,
                 objects: SharedGeneration | None = None,
                 auth: SharedGeneration | None = None) -> None:
        self._w = writer
        self._r = reader
        self._path = writer.execute("PRAGMA database_list").fetchone()[2]  # for messages
        self._point = point  # used only from the event loop thread
        self._wpool = wpool
        self._rpool = rpool
        self._rev = writer.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0]
        self._pending: list[_Pending] = []
        self._committer: asyncio.Task[None] | None = None
        self._gen = generation  # None: no bucket record cached (read from the file)
        self._cache: dict[bytes, tuple[int, float, Item | None]] = {}  # key -> gen, expiry, item
        self._ogen = objects  # None: no object record cached
        self._ocache: dict[bytes, tuple[int, float, Item | None]] = {}
        self._agen = auth  # None: no process but this one uses the file (tests)
        self._alocal = 0  # auth writes of this store, when there is no shared counter

    @classmethod
    async def open(cls, path: str | Path) -> SqliteStore:
        """The store of the file at `path` (created with its schema if missing). A file that
        cannot be opened (not SQLite, unreadable, a full disk) raises, and whatever was
        opened by then (connections, counter files, both threads) is closed first: a caller
        that retries (a daemon's start loop, a test) would otherwise keep them all."""
        wpool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-w")
        rpool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-r")
        opened: list[sqlite3.Connection] = []
        gens: list[SharedGeneration] = []

        def _open() -> None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            for _ in range(3):
                opened.append(conn := sqlite3.connect(
                    str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                    isolation_level=None))
                _configure(conn)
                if len(opened) == 1:
                    conn.executescript(_SCHEMA)

        def _close() -> None:
            for conn in opened:
                conn.close()

        job = None
        try:
            with _full_is_storage_full(path):
                job = wpool.submit(_open)
                await asyncio.wrap_future(job)
            base = Path(path).resolve()  # one counter per file, however named
            for kind in ("bucketgen", "objectgen", "authgen"):
                gens.append(SharedGeneration(f"{base}.{kind}", base))
            return cls(opened[0], opened[1], wpool, rpool, opened[2], *gens)
        except BaseException:
            for gen in gens:
                gen.close()
            # on the writer's thread, after `_open`: a cancelled open's may still be running
            # (waiting out another process's lock), and this loop must not wait for it
            wpool.submit(_close)
            done = job is None or job.done()
            wpool.shutdown(wait=done)
            rpool.shutdown(wait=done)
            raise

    @classmethod
    async def open_readonly(cls, path: str | Path) -> SqliteStore:
        """The store of an existing file, for reading only (`tessera fsck`): no directory,
        schema, cache-counter file or database is created, and a missing file is a
        `ConfigError` naming it; a write raises sqlite3's read-only error."""
        if not Path(path).is_file():
            raise ConfigError(f"metadata database {path} not found")
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-ro")

        def _open() -> tuple[sqlite3.Connection, sqlite3.Connection]:
            uri = f"{Path(path).resolve().as_uri()}?mode=ro"
            conns = [sqlite3.connect(uri, uri=True, check_same_thread=False,
                                     isolation_level=None) for _ in range(2)]
            return conns[0], conns[1]

        try:
            r, point = await asyncio.get_running_loop().run_in_executor(pool, _open)
        except sqlite3.Error as exc:
            pool.shutdown(wait=False)
            raise ConfigError(f"metadata database {path}: {exc}") from None
        return cls(r, r, pool, pool, point)

    # reads -------------------------------------------------------------------------------

    async def _read(self, fn: Callable[[], Any]) -> Any:
        with _full_is_storage_full(self._path):
            return await asyncio.get_running_loop().run_in_executor(self._rpool, fn)

    async def get(self, key: bytes) -> Item | None:
        with _full_is_storage_full(self._path):
            return await self._get(key)

    async def _get(self, key: bytes) -> Item | None:
        if self._point is not None:
            if self._gen is not None and key.startswith(CACHED):
                return self._cached_get(key, self._gen, self._point, self._cache, CACHE_MAX,
                                        None)
            if self._ogen is not None and key.startswith(CACHED_OBJECTS):
                return self._cached_get(key, self._ogen, self._point, self._ocache,
                                        OBJECT_CACHE_MAX, OBJECT_CACHE_BYTES)
            row = self._point.execute("SELECT v, rev FROM kv WHERE k=?", (key,)).fetchone()
        else:
            row = await self._read(lambda: self._r.execute(
                "SELECT v, rev FROM kv WHERE k=?", (key,)).fetchone())
        return Item(key, row[0], row[1]) if row else None

    @staticmethod
    def _cached_get(key: bytes, gen: SharedGeneration, conn: sqlite3.Connection,
                    cache: dict[bytes, tuple[int, float, Item | None]], most: int,
                    largest: int | None) -> Item | None:
        """A record from memory while no process wrote one of its kind since it was read
        (the counter is read before the row, so a write committed meanwhile makes it
        stale). Values over `largest` bytes are not kept. A re-read that finds the record
        as it was (its life ran out, or another record of its kind was written) hands out
        the same `Item`, so what callers keep per `Item` (decoded versions) stays."""
        now, seen = time.monotonic(), gen.value()
        hit = cache.get(key)
        if hit is not None and hit[0] == seen and hit[1] > now:
            return hit[2]
        row = conn.execute("SELECT v, rev FROM kv WHERE k=?", (key,)).fetchone()
        old = hit[2] if hit is not None else None
        if row is None:
            item = None
        elif old is not None and old.revision == row[1] and old.value == row[0]:
            item = old
        else:
            item = Item(key, row[0], row[1])
        if item is None or largest is None or len(item.value) <= largest:
            if len(cache) >= most:
                cache.clear()
            cache[key] = (seen, now + CACHE_TTL_S, item)
        return item

    async def range(self, start: bytes, end: bytes, limit: int = 1000,
                    reverse: bool = False) -> list[Item]:
        order = "DESC" if reverse else "ASC"
        sql = f"SELECT k, v, rev FROM kv WHERE k>=? AND k<? ORDER BY k {order} LIMIT ?"
        rows = await self._read(lambda: self._r.execute(sql, (start, end, limit)).fetchall())
        return [Item(k, v, r) for k, v, r in rows]

    # writes (group commit) -----------------------------------------------------------------

    async def _write(self, op: _Op, keys: tuple[bytes, ...] = ()) -> Any:
        """Run `op` in the next group commit; `keys` are the keys it may write."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut, _kinds(keys)))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_loop())
        return await fut

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                results = await loop.run_in_executor(self._wpool, self._apply, batch)
            except BaseException as exc:  # the whole batch failed to commit
                self._changed(batch)  # it may have committed all the same
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(exc if isinstance(exc, Exception)
                                          else RuntimeError("commit interrupted"))
                if not isinstance(exc, Exception):
                    raise
                continue
            self._changed(batch)
            for (_, fut, _), res in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def _changed(self, batch: list[_Pending]) -> None:
        """After a commit that wrote cached kinds of record: every process's copies of
        those kinds are stale."""
        bits = 0
        for _, _, kinds in batch:
            bits |= kinds
        if bits & _BUCKETS and self._gen is not None:
            self._gen.bump()
        if bits & _OBJECTS and self._ogen is not None:
            self._ogen.bump()
        if bits & _AUTH:
            if self._agen is not None:
                self._agen.bump()
            self._alocal += 1

    async def auth_stamp(self) -> int:
        """A number that has changed once any process wrote a tenant or access-key record
        by a write that returned before this call (a shared counter: no read of the file)."""
        return self._agen.value() if self._agen is not None else self._alocal

    def _apply(self, batch: list[_Pending]) -> list[Any]:
        """Commit `batch` in one transaction; each result is its op's return value or the
        exception it raised (an op that raised is left out of what commits)."""
        failed: dict[int, Exception] = {}
        while True:
            try:
                return self._apply_once(batch, failed)
            except _OpFailed as f:  # rolled back: once more without it (at most once per op)
                failed[f.index] = f.error
            except sqlite3.OperationalError:  # rolled back: nothing of it committed
                with _full_is_storage_full(self._path):
                    raise

    def _apply_once(self, batch: list[_Pending], failed: dict[int, Exception]) -> list[Any]:
        """One attempt at the batch's transaction, skipping the ops in `failed`.

        No savepoint per op: every op reads (its compares) before it writes and writes with
        single statements, so one that fails leaves nothing behind: an SQLite error fails
        the batch, any other error (a bug) rolls it back and `_apply` retries without that
        op. Two statements fewer per op in the writer thread, each a GIL hand-off."""
        c = self._w
        results: list[Any] = []
        start_rev = self._rev

        def next_rev() -> int:
            self._rev += 1
            return self._rev

        c.execute("BEGIN IMMEDIATE")
        # Other processes (the volume driver, `tessera lifecycle run-once`) may write the same
        # file: take the revision counter from the file inside the write lock, never a cache.
        self._rev = start_rev = c.execute(
            "SELECT value FROM meta WHERE name='revision'").fetchone()[0]
        try:
            for i, (op, _, _) in enumerate(batch):
                if i in failed:
                    results.append(failed[i])
                    continue
                try:
                    results.append(op(c, next_rev))
                except sqlite3.Error:
                    raise
                except Exception as exc:  # noqa: BLE001 - returned to that op's caller
                    raise _OpFailed(i, exc) from exc
            if self._rev != start_rev:
                c.execute("UPDATE meta SET value=? WHERE name='revision'", (self._rev,))
            c.execute("COMMIT")
        except BaseException:
            self._rev = start_rev
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return results

    async def put(self, key: bytes, value: bytes) -> int:
        def op(c: sqlite3.Connection, next_rev: Callable[[], int]) -> int:
            rev = next_rev()
            c.execute("INSERT OR REPLACE INTO kv VALUES (?,?,?)", (key, value, rev))
            return rev

        return await self._write(op, (key,))

    async def delete(self, key: bytes) -> bool:
        def op(c: sqlite3.Connection, next_rev: Callable[[], int]) -> bool:
            cur = c.execute("DELETE FROM kv WHERE k=?", (key,))
            if cur.rowcount:
                next_rev()
            return cur.rowcount > 0

        return await self._write(op, (key,))

    async def txn(self, txn: Txn) -> bool:
        done, _ = await self.txn_or_read(txn, ())
        return done

    async def txn_or_read(self, txn: Txn, reads: tuple[bytes, ...]
                          ) -> tuple[bool, dict[bytes, Item | None]]:
        sent, asked, f = fenced(txn, reads)  # a leased worker's step: its lease compared too
        return check(f, *await self._txn_or_read(sent, asked), reads)

    async def _txn_or_read(self, txn: Txn, reads: tuple[bytes, ...]
                           ) -> tuple[bool, dict[bytes, Item | None]]:
        def op(c: sqlite3.Connection, next_rev: Callable[[], int]
               ) -> tuple[bool, dict[bytes, Item | None]]:
            for key, rev in txn.compares.items():
                row = c.execute("SELECT rev FROM kv WHERE k=?", (key,)).fetchone()
                if (row[0] if row else 0) != rev:
                    seen: dict[bytes, Item | None] = {}
                    for k in reads:
                        got = c.execute("SELECT v, rev FROM kv WHERE k=?", (k,)).fetchone()
                        seen[k] = Item(k, got[0], got[1]) if got else None
                    return False, seen
            if txn.puts or txn.deletes:
                rev = next_rev()
                c.executemany("INSERT OR REPLACE INTO kv VALUES (?,?,?)",
                              [(k, v, rev) for k, v in txn.puts.items()])
                c.executemany("DELETE FROM kv WHERE k=?", [(k,) for k in txn.deletes])
            return True, {}

        return await self._write(  # type: ignore[no-any-return]
            op, (*txn.puts, *txn.deletes))

    async def scrub(self) -> None:
        """Best effort: checkpoint and truncate the WAL so overwritten records leave no copy."""
        await asyncio.get_running_loop().run_in_executor(
            self._wpool, lambda: self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())

    async def close(self) -> None:
        if self._committer is not None:
            await self._committer
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._rpool, self._r.close)
        if self._point is not None:
            self._point.close()
        await loop.run_in_executor(self._wpool, self._w.close)
        for gen in (self._gen, self._ogen, self._agen):
            if gen is not None:
                gen.close()
        self._wpool.shutdown(wait=True)
        self._rpool.shutdown(wait=True)
