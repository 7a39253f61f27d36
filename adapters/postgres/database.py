"""The PostgreSQL store that several nodes share: a connection pool, migrations, advisory locks.

Every adapter of the PostgreSQL store (queue, prospect store, history, Pardot slots...) is
built on one `PostgresDatabase`, as the SQLite adapters share one `SQLiteDatabase`.

Two kinds of connection:

- a pool (psycopg_pool) for statements and short transactions; a connection goes back to the
  pool after each, so nothing that must outlive one call may live on it;
- one connection of its own for the session-level advisory locks (create locks, Pardot
  slots), which are held for as long as a Pardot call or a find-or-create takes. Holding them
  on pooled connections would pin one connection per held lock (50 new emails in a batch
  would drain a pool of 10, then wait for a connection that only they could return), and a
  pool recycling a connection would drop its locks without telling their holders.

A node that dies loses its connections, and PostgreSQL ends their sessions and releases their
locks: at once when the process dies (the kernel closes its sockets), and within about 25 s
when the whole machine vanishes (TCP keepalives on both ends, set below).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from adapters.postgres.schema import COMPONENTS, Step
from domain.errors import StoreUnusable

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_POOL_SIZE = 10
CONNECT_SECONDS = 10.0
WAIT_SECONDS = 30.0  # DESTINATION_QUEUE_WAIT_SECONDS
# psycopg_pool doubles its wait between attempts to replace a lost connection, with no ceiling
# until it gives up (5 min by default): after a minute without the server, its next attempt
# could be a minute away, and deliveries would resume that late. Giving up after two seconds
# instead lets the next caller start a fresh attempt at once (the pool grows on demand), so the
# pool reconnects within a second or two of the server's return however long it was gone.
RECONNECT_SECONDS = 2.0
# Both ends probe an idle connection after 10 s, every 5 s, 3 times: a node whose machine
# vanished loses its session (and its locks) within about 25 s.
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5}
SESSION_SETTINGS = (
    "SET TIME ZONE 'UTC'",
    "SET tcp_keepalives_idle = 10",
    "SET tcp_keepalives_interval = 5",
    "SET tcp_keepalives_count = 3",
    # A node stuck inside a transaction must not hold rows (or leases) for ever.
    "SET idle_in_transaction_session_timeout = '60s'",
)
RETRIES_ON_CONFLICT = 3  # a deadlock or serialization failure is retried this often
MIGRATION_LOCK = "schema migrations"


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer release: an older one could damage it."""


def describe(url: str) -> str:
    """`host:port/database` of a URL, never its password: for messages and logs."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable PostgreSQL URL)"
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    return f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or parts.get('user') or ''}"


def connect_options(url: str) -> dict[str, Any]:
    """What every connection adds to the URL, unless the URL says otherwise."""
    given = conninfo_to_dict(url)
    defaults: dict[str, Any] = {
        "application_name": "pardot-destination",
        "connect_timeout": int(CONNECT_SECONDS),
        **KEEPALIVE,
    }
    return {"autocommit": True} | {k: v for k, v in defaults.items() if k not in given}


async def _configure(conn: AsyncConnection[Any]) -> None:
    for statement in SESSION_SETTINGS:
        await conn.execute(statement)


def _unusable(url: str, error: BaseException) -> StoreUnusable:
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return StoreUnusable(
        f"the PostgreSQL store at {describe(url)} cannot be used ({detail}): check that the "
        "server runs and DESTINATION_QUEUE_URL names it, its database, a user allowed to "
        "create tables there, and the schema (options=-csearch_path%3D...) if you chose one"
    )


class PostgresDatabase:
    """Open with `await PostgresDatabase(url).open()` (or `async with`); close when done."""

    def __init__(
        self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE, wait_seconds: float = WAIT_SECONDS
    ) -> None:
        self.url = url
        self.where = describe(url)
        try:
            self._options = connect_options(url)
        except psycopg.ProgrammingError as error:  # names the part, never the password
            raise StoreUnusable(
                f"DESTINATION_QUEUE_URL is not a PostgreSQL URL libpq can read ({error})"
            ) from None
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            url,
            kwargs=self._options,
            min_size=1,
            max_size=max(pool_size, 2),
            open=False,
            configure=_configure,
            name="pardot-destination",
            # How long a caller waits for a connection (the pool reconnecting meanwhile)
            # before it fails: the door's 503 while the server is gone comes after this.
            timeout=wait_seconds,
            reconnect_timeout=RECONNECT_SECONDS,
        )
        self.namespace = ""  # database and schema: what advisory lock keys are scoped to
        self.locks = AdvisoryLocks(self)
        self._opened = False

    async def open(self) -> PostgresDatabase:
        """Connect, create or migrate the schema, then open the pool; StoreUnusable if not."""
        try:
            async with await self.connect() as conn:
                database, schema = await _fetch_one(
                    conn, "SELECT current_database(), current_schema()"
                )
                if schema is None:
                    raise StoreUnusable(
                        f"the PostgreSQL store at {self.where} has no schema to create tables "
                        "in: create the schema named by search_path, or drop the search_path "
                        "option from DESTINATION_QUEUE_URL to use public"
                    )
                self.namespace = f"{database}.{schema}"
                await migrate_all(conn, self.lock_key("", MIGRATION_LOCK), COMPONENTS)
            await self._pool.open(wait=True, timeout=CONNECT_SECONDS)
        except (psycopg.Error, OSError) as error:
            raise _unusable(self.url, error) from error
        except SchemaTooNew as error:
            raise StoreUnusable(f"the PostgreSQL store at {self.where}: {error}") from error
        self._opened = True
        return self

    async def connect(self) -> AsyncConnection[Any]:
        """A connection of its own (not from the pool), set up like the pool's."""
        conn = await AsyncConnection.connect(self.url, **self._options)
        await _configure(conn)
        return conn

    async def check(self) -> None:
        """Raise StoreUnusable unless the database answers now."""
        try:
            async with self._pool.connection(timeout=CONNECT_SECONDS) as conn:
                await conn.execute("SELECT 1")
        except Exception as error:
            raise _unusable(self.url, error) from error

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection in autocommit mode: each statement is its own transaction."""
        async with self._pool.connection() as conn:
            yield conn

    async def transact(self, work: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run `work` in one transaction; run it again when PostgreSQL chose it as a deadlock
        victim (or it lost a serialization conflict): `work` must be safe to repeat."""
        for attempt in range(RETRIES_ON_CONFLICT + 1):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    return await work(conn)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == RETRIES_ON_CONFLICT:
                    raise
                log.info("a store transaction met a conflict; trying it again")
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def lock_key(self, kind: str, name: str) -> int:
        """A 64-bit advisory lock key for `name`, scoped to this database and schema."""
        digest = hashlib.sha256(f"{self.namespace}\0{kind}\0{name}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    async def close(self) -> None:
        await self.locks.close()
        await self._pool.close()

    async def __aenter__(self) -> PostgresDatabase:
        return self if self._opened else await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _fetch_one(conn: AsyncConnection[Any], query: str, *params: Any) -> tuple[Any, ...]:
    cursor = await conn.execute(query, params or None)
    row = await cursor.fetchone()
    assert row is not None
    return tuple(row)


async def migrate_all(
    conn: AsyncConnection[Any], lock: int, components: dict[str, tuple[Step, ...]]
) -> dict[str, int]:
    """Bring every component to its last step in one transaction; returns the versions found.

    The transaction holds an advisory lock, so nodes starting at once migrate one after the
    other (the second finds nothing to do), and a failing step leaves everything as it was.
    """
    found: dict[str, int] = {}
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions"
            " (component text PRIMARY KEY, version integer NOT NULL)"
        )
        cursor = await conn.execute("SELECT component, version FROM schema_versions")
        versions = dict(await cursor.fetchall())
        for component, steps in components.items():
            version = found[component] = int(versions.get(component, 0))
            if version > len(steps):
                raise SchemaTooNew(
                    f"the {component} schema in this database is version {version}, newer than "
                    f"this release knows ({len(steps)}): run the release that wrote it, or point "
                    "DESTINATION_QUEUE_URL at another database or schema"
                )
            for step in steps[version:]:
                for statement in step:
                    await conn.execute(statement)
            if version < len(steps):
                await conn.execute(
                    "INSERT INTO schema_versions (component, version) VALUES (%s, %s)"
                    " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (component, len(steps)),
                )
    return found


class AdvisoryLocks:
    """Session-level advisory locks, all held on one connection of this process's own.

    PostgreSQL counts a session's locks per session, not per task: two tasks of this process
    taking one key would both succeed, so callers keep their own per-key asyncio lock. Calls
    are short (`pg_try_advisory_lock` never waits on the server); waiting is polling, here.
    """

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database
        self._conn: AsyncConnection[Any] | None = None
        self._use = asyncio.Lock()
        self._held: set[int] = set()

    async def try_lock(self, key: int) -> bool:
        """Take `key` if no session holds it; never waits for another holder."""
        call = asyncio.ensure_future(self._call("SELECT pg_try_advisory_lock(%(key)s)", key))
        try:
            got = await asyncio.shield(call)
        except asyncio.CancelledError:
            # The caller gave up while the server answered: a lock taken now would be held by
            # nobody for the rest of the session, so give it back before leaving.
            with contextlib.suppress(Exception):
                if await call:
                    await self.unlock(key)
            raise
        if got:
            self._held.add(key)
        return got

    async def acquire(self, key: int, poll: tuple[float, float]) -> None:
        """Take `key`, polling while another session holds it (first and longest wait)."""
        wait, longest = poll
        while not await self.try_lock(key):
            await asyncio.sleep(wait)
            wait = min(wait * 2, longest)

    async def unlock(self, key: int) -> None:
        if key not in self._held:
            return  # lost with a broken connection (logged then): nothing to give back
        self._held.discard(key)
        with contextlib.suppress(psycopg.OperationalError):  # gone with the connection anyway
            await asyncio.shield(self._call("SELECT pg_advisory_unlock(%(key)s)", key))

    async def acquire_all(self, keys: Sequence[int], poll: tuple[float, float]) -> None:
        """Take every key in the order given (sorted by the caller, so holders of overlapping
        sets cannot wait for each other): the longest free prefix in one statement, then
        polling for the first key another session holds, keeping those taken."""
        wait, longest = poll
        taken = 0
        while taken < len(keys):
            taken += await self._try_prefix(keys[taken:])
            if taken < len(keys):
                await asyncio.sleep(wait)
                wait = min(wait * 2, longest)

    async def unlock_all(self, keys: Sequence[int]) -> None:
        """Give back every key of `keys` this session holds, in one statement."""
        mine = [key for key in keys if key in self._held]
        self._held.difference_update(mine)
        if mine:
            with contextlib.suppress(psycopg.OperationalError):  # gone with the connection
                query = "SELECT count(pg_advisory_unlock(k)) FROM unnest(%(key)s::bigint[]) k"
                await asyncio.shield(self.run(query, mine))

    async def _try_prefix(self, keys: Sequence[int]) -> int:
        """Try every key at once; keep the longest prefix taken, give back the rest."""
        query = (
            "SELECT array_agg(pg_try_advisory_lock(k) ORDER BY n)"
            " FROM unnest(%(key)s::bigint[]) WITH ORDINALITY AS given(k, n)"
        )
        call = asyncio.ensure_future(self.run(query, list(keys)))
        try:
            got: list[bool] = await asyncio.shield(call)
        except asyncio.CancelledError:
            # The caller gave up while the server answered: give back whatever it took.
            with contextlib.suppress(Exception):
                self._held.update(k for k, ok in zip(keys, await call, strict=True) if ok)
                await self.unlock_all(keys)
            raise
        prefix = next((n for n, ok in enumerate(got) if not ok), len(keys))
        self._held.update(keys[:prefix])
        beyond = [k for k, ok in zip(keys[prefix:], got[prefix:], strict=True) if ok]
        if beyond:
            self._held.update(beyond)
            await self.unlock_all(beyond)
        return prefix

    def holds(self, key: int) -> bool:
        """Whether this session still holds `key` (a broken connection lost every lock)."""
        return key in self._held

    async def run(self, query: str, key: int | list[int]) -> Any:
        """`query` with `key` (or a list of keys) as `%(key)s`, on the locks' session: the
        first column of its first row. For bookkeeping that belongs with a lock (see
        PostgresSlots)."""
        async with self._use:
            conn = await self._connection()
            try:
                cursor = await conn.execute(query, {"key": key})
                row = await cursor.fetchone()
            except psycopg.OperationalError:
                await self._lost()
                raise
            return row[0] if row else None

    async def _call(self, query: str, key: int) -> bool:
        return bool(await self.run(query, key))

    async def _connection(self) -> AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                await self._lost()
            self._conn = await self._database.connect()
            # Its writes are bookkeeping a crash of the server may lose (sessions end then too).
            await self._conn.execute("SET synchronous_commit = off")
        return self._conn

    async def _lost(self) -> None:
        if self._held:
            log.warning(
                "the connection holding %d advisory lock(s) broke: the locks are released",
                len(self._held),
            )
        self._held.clear()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None

    async def close(self) -> None:
        async with self._use:
            if self._conn is not None:
                await self._conn.close()  # ends the session: every lock it held is released
                self._conn = None
            self._held.clear()
