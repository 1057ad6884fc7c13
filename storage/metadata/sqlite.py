"""SQLite backend of the metadata interface: one WAL-mode file, one writer thread.

All statements run on one dedicated thread (SQLite connections are not shared across
threads), so the event loop never blocks on disk. Revisions come from one global counter,
as in etcd, so a compare-and-swap works across keys.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from storage.metadata import Item, Txn

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL, rev INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0);
"""


class SqliteStore:
    def __init__(self, conn: sqlite3.Connection, pool: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._pool = pool
        self._rev = conn.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0]

    @classmethod
    async def open(cls, path: str | Path) -> SqliteStore:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

        def _open() -> sqlite3.Connection:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            return conn

        conn = await asyncio.get_running_loop().run_in_executor(pool, _open)
        return cls(conn, pool)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _next_rev(self) -> int:
        self._rev += 1
        self._conn.execute("UPDATE meta SET value=? WHERE name='revision'", (self._rev,))
        return self._rev

    async def get(self, key: bytes) -> Item | None:
        row = await self._run(lambda: self._conn.execute(
            "SELECT v, rev FROM kv WHERE k=?", (key,)).fetchone())
        return Item(key, row[0], row[1]) if row else None

    async def put(self, key: bytes, value: bytes) -> int:
        def _put() -> int:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                rev = self._next_rev()
                self._conn.execute("INSERT OR REPLACE INTO kv VALUES (?,?,?)", (key, value, rev))
                return rev

        return await self._run(_put)

    async def delete(self, key: bytes) -> bool:
        def _delete() -> bool:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                cur = self._conn.execute("DELETE FROM kv WHERE k=?", (key,))
                if cur.rowcount:
                    self._next_rev()
                return cur.rowcount > 0

        return await self._run(_delete)

    async def range(self, start: bytes, end: bytes, limit: int = 1000,
                    reverse: bool = False) -> list[Item]:
        order = "DESC" if reverse else "ASC"
        sql = f"SELECT k, v, rev FROM kv WHERE k>=? AND k<? ORDER BY k {order} LIMIT ?"
        rows = await self._run(lambda: self._conn.execute(sql, (start, end, limit)).fetchall())
        return [Item(k, v, r) for k, v, r in rows]

    async def txn(self, txn: Txn) -> bool:
        def _txn() -> bool:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                for key, rev in txn.compares.items():
                    row = c.execute("SELECT rev FROM kv WHERE k=?", (key,)).fetchone()
                    if (row[0] if row else 0) != rev:
                        c.execute("ROLLBACK")
                        return False
                if txn.puts or txn.deletes:
                    rev = self._next_rev()
                    c.executemany("INSERT OR REPLACE INTO kv VALUES (?,?,?)",
                                  [(k, v, rev) for k, v in txn.puts.items()])
                    c.executemany("DELETE FROM kv WHERE k=?", [(k,) for k in txn.deletes])
                c.execute("COMMIT")
                return True
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

        return await self._run(_txn)

    async def close(self) -> None:
        await self._run(self._conn.close)
        self._pool.shutdown(wait=True)
