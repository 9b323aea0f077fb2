"""Loading an export into a table through Airflow's common.sql hooks, in one transaction.

The table is created when missing: one ``TEXT`` column per export column (see
:mod:`~airflow_provider_quamotion.export.columns`), ``_scheduled_utc`` (``TEXT``, windowed resources
only: the run's ``scheduled`` time normalised to fixed-width UTC, ``2024-01-31T06:11:38.000000Z``,
so it sorts and compares as text in every database) and ``_record`` (``TEXT``: the whole record as
JSON, nothing dropped). Text columns keep the load portable across databases and tolerant of the
API's loose types; cast in SQL (``CAST(duration AS REAL)``, ``_record::jsonb``) where types matter.

One transaction: create the table if missing, delete the rows being replaced (for ``test_runs`` and
``jobs`` the rows whose ``_scheduled_utc`` is in ``[since, until)``, all rows when the window is
unbounded; for every other resource all rows), insert the new rows in batches (``executemany``),
commit once. Any failure rolls back, so the table is unchanged; re-running a window gives the same
rows, without duplicates or losses. (On databases whose DDL commits implicitly, such as MySQL, a
table created by a failed load stays, empty.)

Concurrent first loads (a backfill's runs in parallel) are safe. On PostgreSQL two transactions that
both run ``CREATE TABLE IF NOT EXISTS`` for a table neither sees yet collide on the catalog
(``UniqueViolation`` on ``pg_type_typname_nsp_index``): when the table is missing, the load first
takes a transaction-scoped advisory lock keyed by the table's name (``pg_advisory_xact_lock``), so
the second waits for the first to commit and then finds the table; loads into an existing table take
no lock and run in parallel. SQLite opens the transaction with ``BEGIN IMMEDIATE`` (one writer at a
time, the others wait for the busy timeout instead of failing on a stale snapshot). MySQL's
``CREATE TABLE IF NOT EXISTS`` is atomic under its metadata locks. Any other database that still
reports that the table exists is answered by re-checking it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from airflow_provider_quamotion.exceptions import QuamotionConfigError
from airflow_provider_quamotion.export.columns import Columns, cell, to_json
from airflow_provider_quamotion.export.source import Row
from airflow_provider_quamotion.export.window import Window, utc_text

log = logging.getLogger(__name__)

SCHEDULED_COLUMN = "_scheduled_utc"
RECORD_COLUMN = "_record"
DEFAULT_SQL_BATCH_SIZE = 1000


def db_hook_for(conn_id: str) -> Any:
    """The common.sql ``DbApiHook`` of an Airflow connection."""
    from airflow.sdk import BaseHook

    hook = BaseHook.get_connection(conn_id).get_hook()
    if not all(hasattr(hook, a) for a in ("get_conn", "placeholder")):
        raise QuamotionConfigError(
            f"Connection {conn_id!r} gives a {type(hook).__name__}, not a SQL hook (common.sql DbApiHook). "
            "Use a connection of a SQL database (sqlite, postgres, mysql, ...)."
        )
    return hook


def quote(hook: Any, name: str) -> str:
    """An identifier quoted the database's way (``"name"``; backticks for MySQL)."""
    fmt = str(getattr(hook, "escape_word_format", None) or '"{}"')
    close = fmt[-1] if fmt.endswith(("'", '"', "`", "]")) else '"'
    return fmt.format(name.replace(close, close * 2))


def quote_table(hook: Any, table: str) -> str:
    """A table name (``schema.table`` allowed), each part quoted."""
    parts = [p for p in str(table).strip().split(".")]
    if not parts or any(not p.strip() for p in parts):
        raise QuamotionConfigError(
            f"table={table!r} is not a table name (e.g. 'test_runs' or 'raw.test_runs')."
        )
    return ".".join(quote(hook, p.strip()) for p in parts)


def load_table(
    hook: Any,
    table: str,
    rows: Iterable[Row],
    columns: Columns,
    *,
    windowed: bool,
    window: Window,
    batch_size: int = DEFAULT_SQL_BATCH_SIZE,
) -> int:
    """Replace the window's rows of ``table`` with ``rows`` in one transaction; returns the row count.

    :param hook: a common.sql ``DbApiHook``.
    :param table: the table (created when missing).
    :param rows: the export's rows, consumed lazily.
    :param columns: the column rule (fixed from the first row for ``endpoint=`` exports).
    :param windowed: whether the resource is windowed on ``scheduled`` (adds ``_scheduled_utc``).
    :param window: the window whose rows are replaced.
    :param batch_size: rows per ``executemany``.
    """
    iterator = iter(rows)
    first = next(iterator, None)
    names = list(columns.fix(first.record if first is not None else None))
    # databases fold the case of names (SQLite, MySQL, SQL Server always; an unquoted name too):
    # "_RECORD" is the "_record" column there
    reserved_names = {SCHEDULED_COLUMN.casefold(), RECORD_COLUMN.casefold()}
    reserved = sorted(n for n in names if n.casefold() in reserved_names)
    if reserved:
        raise QuamotionConfigError(
            f"Column name(s) {reserved} collide with the columns {SCHEDULED_COLUMN!r} and "
            f"{RECORD_COLUMN!r} the SQL export reserves (names are compared ignoring case); "
            "choose other columns with fields=."
        )
    all_names = [*names, *([SCHEDULED_COLUMN] if windowed else []), RECORD_COLUMN]
    target = quote_table(hook, table)
    quoted = [quote(hook, n) for n in all_names]
    ph = hook.placeholder
    create = f"CREATE TABLE IF NOT EXISTS {target} ({', '.join(f'{q} TEXT' for q in quoted)})"
    delete, delete_params = _delete(hook, target, windowed, window, ph)
    # Identifiers are quoted (quote()); every value is a bound parameter.
    insert = f"INSERT INTO {target} ({', '.join(quoted)}) VALUES ({', '.join([ph] * len(quoted))})"  # noqa: S608

    def values(row: Row) -> tuple[Any, ...]:
        cells = [cell(v) for v in columns.values(row.record)]
        if windowed:
            cells.append(utc_text(row.scheduled) if row.scheduled is not None else None)
        cells.append(to_json(row.record))
        return tuple(cells)

    conn = hook.get_conn()
    cursor = None
    try:
        if getattr(hook, "supports_autocommit", False):
            hook.set_autocommit(conn, False)
        _begin(conn)
        cursor = conn.cursor()
        _create_table(hook, conn, cursor, create, table, target)
        cursor.execute(delete, delete_params)
        n = 0
        stream = _chain(first, iterator)
        while True:
            batch = [values(r) for r in islice(stream, max(1, batch_size))]
            if not batch:
                break
            cursor.executemany(insert, batch)
            n += len(batch)
        conn.commit()
        log.info("Loaded %d rows into %s (replacing %s)", n, table, _what(windowed, window))
        return n
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        if cursor is not None:
            with contextlib.suppress(Exception):
                cursor.close()
        with contextlib.suppress(Exception):
            conn.close()


def _is_postgres(hook: Any, conn: Any) -> bool:
    if str(getattr(hook, "conn_type", "") or getattr(hook, "conn_name_attr", "")).startswith("postgres"):
        return True
    module = type(conn).__module__ or ""
    return module.startswith(("psycopg2", "psycopg", "pg8000", "asyncpg"))


def _create_table(hook: Any, conn: Any, cursor: Any, create: str, table: str, target: str) -> None:
    """``CREATE TABLE IF NOT EXISTS``, safe when other loads create the same table at the same time."""
    if _is_postgres(hook, conn):
        ph = hook.placeholder
        cursor.execute(f"SELECT to_regclass({ph})", (target,))
        row = cursor.fetchone()
        if row is None or row[0] is None:
            # Until this transaction ends, other first loads of this table wait here, then find it.
            key = f"airflow_provider_quamotion:{target}"
            cursor.execute(f"SELECT pg_advisory_xact_lock(hashtextextended({ph}, 0))", (key,))
            log.debug("Creating %s if missing, under the advisory lock %r", table, key)
        cursor.execute(create)
        return
    try:
        cursor.execute(create)
    except Exception as err:
        if "exist" not in str(err).lower() or not _table_exists(cursor, target):
            raise
        log.info("%s was created meanwhile by another load: %s", table, err)


def _table_exists(cursor: Any, target: str) -> bool:
    try:
        cursor.execute(f"SELECT 1 FROM {target} WHERE 1 = 0")  # noqa: S608 (a quoted identifier)
    except Exception:
        return False
    return True


def _delete(hook: Any, target: str, windowed: bool, window: Window, ph: str) -> tuple[str, tuple[str, ...]]:
    if not (windowed and window.bounded):
        return f"DELETE FROM {target}", ()  # noqa: S608 (a quoted identifier)
    col = quote(hook, SCHEDULED_COLUMN)
    where: list[str] = []
    params: list[str] = []
    if window.since is not None:
        where.append(f"{col} >= {ph}")
        params.append(utc_text(window.since))
    if window.until is not None:
        where.append(f"{col} < {ph}")
        params.append(utc_text(window.until))
    return f"DELETE FROM {target} WHERE {' AND '.join(where)}", tuple(params)  # noqa: S608 (bound values)


def _what(windowed: bool, window: Window) -> str:
    if windowed and window.bounded:
        since, until = window.iso()
        return f"the rows scheduled in [{since or '-inf'}, {until or '+inf'})"
    return "all rows"


def _begin(conn: Any) -> None:
    """Open the transaction explicitly where the driver would run DDL outside one (sqlite3)."""
    import sqlite3

    if isinstance(conn, sqlite3.Connection) and not conn.in_transaction:
        # IMMEDIATE: take the write lock now; a deferred transaction that read first fails with
        # "database is locked" instead of waiting when another load writes meanwhile.
        conn.execute("BEGIN IMMEDIATE")


def _chain(first: Row | None, rest: Iterator[Row]) -> Iterator[Row]:
    if first is not None:
        yield first
    yield from rest


def lineage_dataset(conn_id: str, table: str) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a table: ``postgres://host:port`` + ``database.table``."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    scheme = conn.conn_type or "sql"
    if conn.host:
        authority = f"{conn.host}:{conn.port}" if conn.port else str(conn.host)
        name = ".".join(p for p in (conn.schema, table) if p)
        return f"{scheme}://{authority}", name
    return f"{scheme}://{conn.schema or ''}", table
