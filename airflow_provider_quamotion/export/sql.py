"""Loading an export into a table through Airflow's common.sql hooks, in one transaction.

The table is created when missing: one column per export column (see
:mod:`~airflow_provider_quamotion.export.columns`), typed by the columns' declared types through
:data:`TYPE_TABLES` (a known resource's ``api.FIELD_TYPES``; ``TEXT`` where none is declared, as for
``endpoint=`` exports without ``schema=``; docs/warehouses.md), ``_scheduled_utc`` (``TEXT``, windowed resources
only: the run's ``scheduled`` time normalised to fixed-width UTC, ``2024-01-31T06:11:38.000000Z``,
so it sorts and compares as text in every database) and ``_record`` (``TEXT``: the whole record as
JSON, nothing dropped). A value that does not fit its column's type is loaded as NULL (counted in
the log); ``mode="merge"`` upserts by the resource's key instead of replacing the window.

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
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from operator import itemgetter
from typing import Any

from airflow_provider_quamotion.api import TEST_RUN_SCHEDULED
from airflow_provider_quamotion.exceptions import QuamotionConfigError
from airflow_provider_quamotion.export.columns import (
    BOOLEAN,
    COLUMN_TYPES,
    FLOAT,
    INTEGER,
    JSON,
    MISFIT,
    TEXT,
    TIMESTAMP,
    Columns,
    cell,
    to_json,
    typed,
)
from airflow_provider_quamotion.export.source import Row
from airflow_provider_quamotion.export.window import Window, utc_text

log = logging.getLogger(__name__)

SCHEDULED_COLUMN = "_scheduled_utc"
RECORD_COLUMN = "_record"
DEFAULT_SQL_BATCH_SIZE = 1000


def db_hook_for(conn_id: str) -> Any:
    """The common.sql ``DbApiHook`` of an Airflow connection."""
    from airflow_provider_quamotion.compat import BaseHook

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


#: Column types per database family (see :data:`~airflow_provider_quamotion.export.columns.COLUMN_TYPES`).
TYPE_TABLES: dict[str, dict[str, str]] = {
    "postgres": {
        TEXT: "TEXT",
        INTEGER: "BIGINT",
        FLOAT: "DOUBLE PRECISION",
        BOOLEAN: "BOOLEAN",
        TIMESTAMP: "TIMESTAMPTZ",
        JSON: "JSONB",
    },
    "sqlite": {
        TEXT: "TEXT",
        INTEGER: "INTEGER",
        FLOAT: "REAL",
        BOOLEAN: "INTEGER",
        TIMESTAMP: "TEXT",
        JSON: "TEXT",
    },
    "mysql": {
        TEXT: "LONGTEXT",  # TEXT holds 64 KiB: a run's record can be longer
        INTEGER: "BIGINT",
        FLOAT: "DOUBLE",
        BOOLEAN: "BOOLEAN",
        TIMESTAMP: "DATETIME(6)",
        JSON: "JSON",
    },
    "duckdb": {
        TEXT: "VARCHAR",
        INTEGER: "BIGINT",
        FLOAT: "DOUBLE",
        BOOLEAN: "BOOLEAN",
        TIMESTAMP: "TIMESTAMPTZ",
        JSON: "JSON",
    },
    "generic": dict.fromkeys(COLUMN_TYPES, "TEXT"),
}

#: Existing column types (lower case, as the catalog names them) a declared type accepts.
_ACCEPTS: dict[str, dict[str, set[str]]] = {
    "postgres": {
        INTEGER: {"bigint", "integer", "smallint", "numeric"},
        FLOAT: {"double precision", "real", "numeric"},
        BOOLEAN: {"boolean"},
        TIMESTAMP: {"timestamp with time zone"},
        JSON: {"jsonb", "json"},
    },
    "sqlite": {
        INTEGER: {"integer", "int", "bigint"},
        FLOAT: {"real", "double", "double precision", "float"},
        BOOLEAN: {"integer", "int", "boolean"},
        TIMESTAMP: {"text"},
        JSON: {"text"},
    },
    "mysql": {
        INTEGER: {"bigint", "int", "integer"},
        FLOAT: {"double", "float", "decimal"},
        BOOLEAN: {"tinyint"},
        TIMESTAMP: {"datetime", "timestamp"},
        JSON: {"json", "longtext"},  # MariaDB's JSON is LONGTEXT with a json_valid check
    },
    "duckdb": {
        INTEGER: {"bigint", "integer"},
        FLOAT: {"double", "float", "real"},
        BOOLEAN: {"boolean"},
        TIMESTAMP: {"timestamp with time zone"},
        JSON: {"json"},
    },
}
_TEXT_TYPES = {
    "text",
    "character varying",
    "varchar",
    "character",
    "char",
    "clob",
    "longtext",
    "mediumtext",
    "",
}

MODES = ("replace", "merge")


def family_of(hook: Any, conn: Any) -> str:
    """The database family of a hook/connection: ``postgres``, ``sqlite``, ``mysql``, ``duckdb`` or ``generic``."""
    import sqlite3

    if _is_postgres(hook, conn):
        return "postgres"
    if isinstance(conn, sqlite3.Connection):
        return "sqlite"
    kind = str(getattr(hook, "conn_type", "") or getattr(hook, "conn_name_attr", "")).lower()
    module = (type(conn).__module__ or "").lower()
    if kind.startswith("sqlite"):
        return "sqlite"
    if kind.startswith("duckdb") or module.startswith("duckdb"):
        return "duckdb"
    if kind.startswith(("mysql", "maria")) or module.startswith(("mysqldb", "pymysql", "mysql", "mariadb")):
        return "mysql"
    return "generic"


def load_table(
    hook: Any,
    table: str,
    rows: Iterable[Row],
    columns: Columns,
    *,
    windowed: bool,
    window: Window,
    batch_size: int = DEFAULT_SQL_BATCH_SIZE,
    mode: str = "replace",
    key: Sequence[str] = (),
    add_new_columns: bool = False,
    scheduled_tz: dt.tzinfo = dt.timezone.utc,
) -> int:
    """Load ``rows`` into ``table`` in one transaction; returns the row count.

    :param hook: a common.sql ``DbApiHook``.
    :param table: the table (created when missing).
    :param rows: the export's rows, consumed lazily.
    :param columns: the column rule (fixed from the first row for ``endpoint=`` exports) and the
        columns' declared types (text when none).
    :param windowed: whether the resource is windowed on ``scheduled`` (adds ``_scheduled_utc``).
    :param window: the window whose rows are replaced (``mode="replace"``).
    :param batch_size: rows per ``executemany``.
    :param mode: ``replace`` (delete the window's rows, insert the new ones) or ``merge`` (upsert
        by ``key``: rows whose key is loaded again are updated, others kept).
    :param key: the key columns of ``mode="merge"`` (``testRunId``; a job's ``id``).
    :param add_new_columns: add the columns of known fields an existing table lacks (else such a
        column is left out of the load, with a warning; its values stay in ``_record``).
    :param scheduled_tz: the zone of an offsetless ``scheduled`` (the connection's
        ``scheduled_timezone``), for its typed column; ``_scheduled_utc`` comes from the rows.
    """
    if mode not in MODES:
        raise QuamotionConfigError(f"mode={mode!r}: use one of {', '.join(MODES)}.")
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
    key = tuple(key)
    if mode == "merge":
        missing_key = [k for k in key if k not in names]
        if not key or missing_key:
            raise QuamotionConfigError(
                f"mode='merge' needs the key column(s) {list(key) or '(none known)'} among the export's "
                "columns; pass a resource with a key (test_runs, jobs) and keep its key in fields=."
            )
    target = quote_table(hook, table)
    ph = hook.placeholder
    conn = hook.get_conn()
    family = family_of(hook, conn)
    sql_types = TYPE_TABLES[family]
    kinds = {n: columns.type_of(n) for n in names}
    cursor = None
    finish: Finish | None = None
    try:
        if getattr(hook, "supports_autocommit", False):
            hook.set_autocommit(conn, False)
        # a DuckDB cursor is a connection of its own (its own transaction): use the connection
        cursor = conn if family == "duckdb" else conn.cursor()
        _begin(conn, family)
        extra = [*([SCHEDULED_COLUMN] if windowed else []), RECORD_COLUMN]
        existing = _existing_columns(family, cursor, table, target, ph)
        if existing is None:
            definitions = [f"{quote(hook, n)} {sql_types[kinds[n]]}" for n in names]
            definitions += [f"{quote(hook, n)} {sql_types[TEXT]}" for n in extra]
            create = f"CREATE TABLE IF NOT EXISTS {target} ({', '.join(definitions)})"
            _create_table(hook, conn, cursor, create, table, target)
            existing = _existing_columns(family, cursor, table, target, ph)
        if existing:
            names, kinds = _reconcile(
                hook, cursor, family, table, target, names, kinds, existing, extra, add_new_columns
            )
        if mode == "merge":
            _ensure_key_index(hook, cursor, family, table, target, key)
        all_names = [*names, *extra]
        if mode == "replace":
            delete, delete_params = _delete(hook, target, windowed, window, ph)
            cursor.execute(delete, delete_params)
        zones = {n: scheduled_tz if windowed and n == TEST_RUN_SCHEDULED else dt.timezone.utc for n in names}
        misfits: dict[str, int] = {}
        n = 0
        stream = _chain(first, iterator)
        size = max(1, batch_size)
        if family == "postgres":
            order, encode = _copy_encoder(names, kinds, zones, columns, windowed, misfits)
            text = _text_path(hook, cursor, target, [*order, *extra], key if mode == "merge" else ())
            if text is not None:
                write_text, finish = text
                while True:
                    lines = [encode(row) for row in islice(stream, size)]
                    if not lines:
                        break
                    n += len(lines)
                    lines.append("")  # the last line's break
                    write_text("\n".join(lines))
                return _done(conn, finish, misfits, n, table, mode, key, windowed, window)
        write, finish = _bulk_path(
            hook, conn, cursor, family, target, all_names, key if mode == "merge" else ()
        )
        adapt = [_adapter(family, kinds[n], zones[n]) for n in names]
        every = list(columns.names or ())
        positions = [every.index(n) for n in names]
        while True:
            batch = []
            for row in islice(stream, max(1, batch_size)):
                cells: list[Any] = []
                values = columns.values(row.record)
                for name, at, to_db in zip(names, positions, adapt, strict=True):
                    value = values[at]
                    converted = to_db(value)
                    if converted is MISFIT:
                        misfits[name] = misfits.get(name, 0) + 1
                        converted = None
                    cells.append(converted)
                if windowed:
                    cells.append(utc_text(row.scheduled) if row.scheduled is not None else None)
                cells.append(to_json(row.record))
                batch.append(tuple(cells))
            if not batch:
                break
            write(batch)
            n += len(batch)
        return _done(conn, finish, misfits, n, table, mode, key, windowed, window)
    except BaseException as error:
        if finish is not None:
            with contextlib.suppress(Exception):
                finish(error)
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        if cursor is not None:
            with contextlib.suppress(Exception):
                cursor.close()
        with contextlib.suppress(Exception):
            conn.close()


Batch = list[tuple[Any, ...]]
#: Ends a bulk path: ``finish()`` after the last batch, ``finish(error)`` when the load fails.
Finish = Callable[..., None]


def _done(
    conn: Any,
    finish: Finish,
    misfits: dict[str, int],
    n: int,
    table: str,
    mode: str,
    key: Sequence[str],
    windowed: bool,
    window: Window,
) -> int:
    """End the bulk path, commit, log what was loaded; returns ``n``."""
    finish()
    conn.commit()
    if misfits:
        log.warning(
            "%d value(s) did not fit their column's type and were loaded as NULL (%s); the records "
            "keep them in %s",
            sum(misfits.values()),
            ", ".join(f"{c}: {k}" for c, k in misfits.items()),
            RECORD_COLUMN,
        )
    what = f"merging by {', '.join(key)}" if mode == "merge" else f"replacing {_what(windowed, window)}"
    log.info("Loaded %d rows into %s (%s)", n, table, what)
    return n


def _text_path(
    hook: Any, cursor: Any, target: str, names: list[str], key: Sequence[str]
) -> tuple[Callable[[str], None], Finish] | None:
    """PostgreSQL's bulk path: ``(write(copy_text), finish())`` of ``COPY FROM STDIN`` into the table,
    or (``key``, merge) into a temporary table that one ``INSERT ... SELECT ... ON CONFLICT DO
    UPDATE`` merges at the end; ``None`` when the driver has no ``COPY`` (``executemany`` then)."""
    if not (hasattr(cursor, "copy") or hasattr(cursor, "copy_expert")):
        return None
    quoted = [quote(hook, n) for n in names]
    if not key:
        return _copier(cursor, target, quoted)
    columns = ", ".join(quoted)
    keys = ", ".join(quote(hook, k) for k in key)
    updates = ", ".join(f"{q} = excluded.{q}" for n, q in zip(names, quoted, strict=True) if n not in key)
    staging = quote(hook, "_quamotion_merge")
    cursor.execute(f"DROP TABLE IF EXISTS {staging}")
    like = f"SELECT {columns} FROM {target} WITH NO DATA"  # noqa: S608 (quoted identifiers)
    cursor.execute(f"CREATE TEMP TABLE {staging} ON COMMIT DROP AS {like}")
    copy = _copier(cursor, staging, quoted)
    if copy is None:
        return None
    write_staging, end_copy = copy

    def merge(error: BaseException | None = None) -> None:
        end_copy(error)
        if error is not None:
            return
        # the last copy of a key loaded twice wins (ctid: the order COPY wrote them)
        cursor.execute(
            f"INSERT INTO {target} ({columns}) SELECT DISTINCT ON ({keys}) {columns} "  # noqa: S608
            f"FROM {staging} ORDER BY {keys}, ctid DESC ON CONFLICT ({keys}) DO UPDATE SET {updates}"
        )

    return write_staging, merge


def _bulk_path(
    hook: Any, conn: Any, cursor: Any, family: str, target: str, names: list[str], key: Sequence[str]
) -> tuple[Callable[[Batch], None], Finish]:
    """``(write(batch), finish())``: the database's bulk path for the load's rows; ``key`` to upsert by.

    PostgreSQL takes COPY text instead (:func:`_text_path`); without ``COPY`` in its driver it comes
    here. DuckDB: each batch inserted as an Arrow table (merge: the batch's keys deleted first).
    SQLite: ``executemany`` (merge: ``ON CONFLICT DO UPDATE``). Others (PostgreSQL without ``COPY``,
    MySQL/MariaDB, generic): batched ``executemany`` (merge: the batch's keys deleted first).
    Everything runs in the load's one transaction.
    """
    quoted = [quote(hook, n) for n in names]
    columns = ", ".join(quoted)
    keys = ", ".join(quote(hook, k) for k in key)
    updates = ", ".join(f"{q} = excluded.{q}" for n, q in zip(names, quoted, strict=True) if n not in key)
    if family == "duckdb":
        arrow = _arrow_writer(conn, target, quoted, [quote(hook, k) for k in key])
        if arrow is not None:
            return arrow, _nothing
    ph = hook.placeholder
    # Identifiers are quoted (quote()); every value is a bound parameter.
    insert = f"INSERT INTO {target} ({columns}) VALUES ({', '.join([ph] * len(quoted))})"  # noqa: S608
    delete: str | None = None
    if key and family in ("postgres", "sqlite"):
        insert += f" ON CONFLICT ({keys}) DO UPDATE SET {updates}"
    elif key:
        delete = f"DELETE FROM {target} WHERE {' AND '.join(f'{quote(hook, k)} = {ph}' for k in key)}"  # noqa: S608
    key_at = [names.index(k) for k in key]

    def write(batch: Batch) -> None:
        if delete is not None:  # upsert: delete the batch's keys, then insert
            cursor.executemany(delete, [tuple(row[i] for i in key_at) for row in batch])
        cursor.executemany(insert, batch)

    return write, _nothing


def _nothing(error: BaseException | None = None) -> None:
    """A bulk path with nothing to do at the end."""


def _arrow_writer(
    conn: Any, target: str, quoted: list[str], keys: list[str]
) -> Callable[[Batch], None] | None:
    """DuckDB's bulk path: each batch registered as an Arrow table and inserted with one statement."""
    try:
        import pyarrow as pa
    except ImportError:  # the parquet extra is not installed: executemany
        return None
    view = "_quamotion_batch"
    aliases = [f"c{i}" for i in range(len(quoted))]
    insert = f"INSERT INTO {target} ({', '.join(quoted)}) SELECT {', '.join(aliases)} FROM {view}"  # noqa: S608
    delete = None
    if keys:
        match = " AND ".join(f"{view}.{aliases[quoted.index(k)]} = {target}.{k}" for k in keys)
        delete = f"DELETE FROM {target} WHERE EXISTS (SELECT 1 FROM {view} WHERE {match})"  # noqa: S608

    def write(batch: Batch) -> None:
        table = pa.table([pa.array(list(column)) for column in zip(*batch, strict=True)], names=aliases)
        conn.register(view, table)
        try:
            if delete is not None:
                conn.execute(delete)
            conn.execute(insert)
        finally:
            conn.unregister(view)

    return write


def _copy_text(value: Any) -> str:
    """A value in ``COPY ... FROM STDIN`` text format (``\\N`` for NULL, backslash escapes)."""
    if value is None:
        return _NULL
    kind = type(value)
    if kind is str:
        return _escaped(value)
    if kind is bool:
        return "t" if value else "f"
    if kind is int:
        return str(value)
    if kind is float:
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return _escaped(str(value))


_NULL = "\\N"


def _escaped(text: str) -> str:
    """``text`` with COPY's backslash escapes (backslash, tab, newline, carriage return)."""
    # four scans in C are cheaper than one generator over the special characters
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def _copier(cursor: Any, target: str, quoted: list[str]) -> tuple[Callable[[str], None], Finish] | None:
    """``COPY FROM STDIN`` of COPY text; ``(write(text), finish())``, or ``None`` without ``COPY``.

    psycopg 3: one ``COPY`` for the whole load, each batch written into it as it comes, so the server
    ingests rows while the next batch is fetched and converted; ``finish`` ends it. (A failure
    leaves the ``COPY`` open: the load's rollback and close abort it with the transaction.)
    psycopg2 (``copy_expert`` reads a whole file): one ``COPY`` per batch.
    """
    import io

    sql = f"COPY {target} ({', '.join(quoted)}) FROM STDIN"
    if hasattr(cursor, "copy") and not hasattr(cursor, "copy_expert"):  # psycopg 3
        stack = contextlib.ExitStack()
        copying: list[Any] = []

        def copy3(text: str) -> None:
            if not copying:
                copying.append(stack.enter_context(cursor.copy(sql)))
            copying[0].write(text)

        def end(error: BaseException | None = None) -> None:
            if error is None:
                stack.close()
            else:  # CopyFail: the server ends the COPY, the load's rollback can run
                stack.__exit__(type(error), error, error.__traceback__)

        return copy3, end
    if hasattr(cursor, "copy_expert"):  # psycopg2

        def copy2(text: str) -> None:
            cursor.copy_expert(sql, io.StringIO(text))

        return copy2, _nothing
    return None


def _copy_encoder(
    names: list[str],
    kinds: dict[str, str],
    zones: dict[str, dt.tzinfo],
    columns: Columns,
    windowed: bool,
    misfits: dict[str, int],
) -> tuple[list[str], Callable[[Row], str]]:
    """``(order, line)``: ``line(row)`` is a row's ``COPY`` text line (without its line break), the columns ``names`` in
    ``order`` (text columns first), then ``_scheduled_utc`` when ``windowed``, then ``_record``; a
    value that does not fit its column is NULL, counted in ``misfits``.

    The same text as :func:`_adapter` then :func:`_copy_text` per value, with fewer Python calls per
    row: the text columns taken in one ``itemgetter`` and joined as they are, their escapes checked
    once on the joined text (each NULL brings one backslash, so more backslashes, or more tabs than
    separators, or a line break, and the row's text cells are escaped one by one); typed columns by a
    converter per column (:func:`_copy_cell`); the record's JSON has no raw tab or line break (JSON
    escapes them), only its backslashes to double.
    """
    every = list(columns.names or ())
    known = frozenset(every)
    size = len(every)
    texts = [c for c in names if kinds[c] == TEXT]
    typed_names = [c for c in names if kinds[c] != TEXT]
    get_texts = _getter(texts)
    get_typed = _getter(typed_names)
    converters = [_copy_cell(kinds[c], zones[c], _counter(misfits, c)) for c in typed_names]
    separators = len(texts) - 1
    null = _NULL
    join = "\t".join
    encode = to_json

    def text_cell(value: Any) -> str:
        return null if value is None else value if isinstance(value, str) else encode(value)

    def line(row: Row) -> str:
        record = row.record
        if record.__class__ is dict and len(record) == size and record.keys() <= known:
            source = record
        else:  # missing keys, other keys (a warning names them once), not an object
            source = dict(zip(every, columns.values(record), strict=True))
        cells = [convert(v) for convert, v in zip(converters, get_typed(source), strict=False)]
        if texts:
            values = get_texts(source)
            joined = join([v if v.__class__ is str else null if v is None else text_cell(v) for v in values])
            if (
                joined.count("\\") != values.count(None)
                or joined.count("\t") != separators
                or "\n" in joined
                or "\r" in joined
            ):
                joined = join([null if v is None else _escaped(text_cell(v)) for v in values])
            cells.insert(0, joined)
        if windowed:
            cells.append(null if row.scheduled is None else utc_text(row.scheduled))
        whole = encode(record)
        cells.append(whole.replace("\\", "\\\\") if "\\" in whole else whole)
        return join(cells)

    return [*texts, *typed_names], line


def _getter(names: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """mapping -> the values of ``names`` as a tuple (``operator.itemgetter``, also for 0 or 1 name)."""
    if len(names) > 1:
        return itemgetter(*names)
    if names:
        only = names[0]
        return lambda mapping: (mapping[only],)
    return lambda mapping: ()


def _counter(misfits: dict[str, int], name: str) -> Callable[[], None]:
    """Counts one misfit of column ``name``."""

    def count() -> None:
        misfits[name] = misfits.get(name, 0) + 1

    return count


#: Integers PostgreSQL's ``BIGINT`` takes.
_INT_MIN, _INT_END = -(2**63), 2**63


def _copy_cell(kind: str, naive_tz: dt.tzinfo, misfit: Callable[[], None]) -> Callable[[Any], str]:
    """value -> its ``COPY`` text for a PostgreSQL column of type ``kind`` (not text), escaped;
    ``\\N`` for NULL and for a value that does not fit (``misfit()`` counts it).

    The usual values take a short way, with the text :func:`_adapter` then :func:`_copy_text` give:
    an ``int``, a finite ``float``, a ``bool``, an offsetless timestamp where offsetless means UTC
    (parsed, written back with ``+00:00``: no conversion to UTC to do); JSON's only special character
    is the backslash. Anything else goes through :func:`_adapter`.
    """
    to_db = _adapter("postgres", kind, naive_tz)
    null = _NULL

    def general(value: Any) -> str:
        if value is None:
            return null
        converted = to_db(value)
        if converted is MISFIT:
            misfit()
            return null
        return _copy_text(converted)

    if kind == INTEGER:

        def integer(value: Any) -> str:
            if value.__class__ is int and _INT_MIN <= value < _INT_END:
                return str(value)
            return general(value)

        return integer
    if kind == FLOAT:

        def number(value: Any) -> str:
            if value.__class__ is float and value - value == 0.0:  # finite (inf - inf and nan are nan)
                return repr(value)
            return general(value)

        return number
    if kind == BOOLEAN:

        def boolean(value: Any) -> str:
            if value is True:
                return "t"
            if value is False:
                return "f"
            return general(value)

        return boolean
    if (
        kind == TIMESTAMP
        and isinstance(naive_tz, dt.timezone)
        and naive_tz.utcoffset(None) == dt.timedelta(0)
    ):
        parse = dt.datetime.fromisoformat

        def timestamp(value: Any) -> str:
            if value.__class__ is str:
                try:
                    parsed = parse(value)
                except ValueError:
                    return general(value)  # "Z" before Python 3.11, spaces around, not a time: as always
                if parsed.tzinfo is None:  # UTC: the wall-clock time is the UTC time
                    return parsed.isoformat() + "+00:00"
            return general(value)

        return timestamp
    if kind == JSON:
        encode = to_json

        def json_text(value: Any) -> str:
            if value is None:
                return null
            text = encode(value)
            return text.replace("\\", "\\\\") if "\\" in text else text

        return json_text
    return general


def _adapter(family: str, kind: str, naive_tz: dt.tzinfo = dt.timezone.utc) -> Callable[[Any], Any]:
    """value -> the parameter a ``family`` database takes for a ``kind`` column (or ``MISFIT``);
    an offsetless timestamp is in ``naive_tz``."""
    if family == "generic" or kind == TEXT:
        return cell
    if kind == TIMESTAMP:
        if family in ("postgres", "duckdb"):
            return lambda v: typed(v, TIMESTAMP, naive_tz)
        if family == "mysql":

            def naive_utc(v: Any) -> Any:
                t = typed(v, TIMESTAMP, naive_tz)
                return t.replace(tzinfo=None) if isinstance(t, dt.datetime) else t

            return naive_utc

        def iso(v: Any) -> Any:
            t = typed(v, TIMESTAMP, naive_tz)
            return utc_text(t) if isinstance(t, dt.datetime) else t

        return iso
    if kind == BOOLEAN and family == "sqlite":

        def zero_one(v: Any) -> Any:
            b = typed(v, BOOLEAN)
            return int(b) if isinstance(b, bool) else b

        return zero_one
    return lambda v: typed(v, kind)


def _existing_columns(family: str, cursor: Any, table: str, target: str, ph: str) -> dict[str, str] | None:
    """The existing table's columns and their types (lower case); ``{}`` when the database cannot
    say (the table is taken as it is); ``None`` when the table does not exist."""
    if family == "postgres":
        where = f"a.attrelid = to_regclass({ph}) AND a.attnum > 0 AND NOT a.attisdropped"
        catalog = f"SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE {where}"  # noqa: S608
        cursor.execute(catalog, (target,))
        found = {str(name): str(kind).lower() for name, kind in cursor.fetchall()}
        return found or None
    if family == "sqlite":
        parts = [p.strip() for p in str(table).split(".")]
        schema, name = (parts[0], parts[-1]) if len(parts) > 1 else ("main", parts[0])
        cursor.execute("SELECT name, type FROM pragma_table_info(?, ?)", (name, schema))
        found = {str(n): str(k).lower() for n, k in cursor.fetchall()}
        return found or None
    if family in ("mysql", "duckdb"):
        parts = [p.strip() for p in str(table).split(".")]
        here = "DATABASE()" if family == "mysql" else "current_schema()"
        schema = ph if len(parts) > 1 else here
        cursor.execute(
            "SELECT column_name, data_type FROM information_schema.columns "  # noqa: S608 (no values)
            f"WHERE table_name = {ph} AND table_schema = {schema}",
            (parts[-1], parts[0]) if len(parts) > 1 else (parts[-1],),
        )
        found = {_text(n): _text(k).lower() for n, k in cursor.fetchall()}
        return found or None
    return {} if _table_exists(cursor, target) else None


def _text(value: Any) -> str:
    """A catalog value as text (MySQL drivers may give ``bytes``)."""
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _reconcile(
    hook: Any,
    cursor: Any,
    family: str,
    table: str,
    target: str,
    names: list[str],
    kinds: dict[str, str],
    existing: dict[str, str],
    extra: list[str],
    add_new_columns: bool,
) -> tuple[list[str], dict[str, str]]:
    """Match the load to an existing table: its text columns take text (a table from before typed
    columns), a column of a conflicting type is an error, a missing column is added
    (``add_new_columns``) or left out."""
    accepts = _ACCEPTS.get(family, {})
    kinds = dict(kinds)
    kept: list[str] = []
    legacy: list[str] = []
    for name in names:
        have = existing.get(name)
        kind = kinds[name]
        if have is None:
            if add_new_columns:
                sql_type = TYPE_TABLES[family][kind]
                if family == "postgres":
                    _lock(hook, cursor, target)
                    cursor.execute(
                        f"ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {quote(hook, name)} {sql_type}"
                    )
                else:
                    cursor.execute(f"ALTER TABLE {target} ADD COLUMN {quote(hook, name)} {sql_type}")
                log.info("Added column %s %s to %s", name, sql_type, table)
                kept.append(name)
            else:
                log.warning(
                    "%s has no column %r: its values are left out (they stay in %s); pass "
                    "add_new_columns=True to add it.",
                    table,
                    name,
                    RECORD_COLUMN,
                )
            continue
        kept.append(name)
        base = have.split("(")[0].strip()
        if kind == TEXT or kind not in accepts or have in accepts[kind] or base in accepts[kind]:
            continue
        if base in _TEXT_TYPES:
            kinds[name] = TEXT  # a text column of an older load: loaded as text, as before
            legacy.append(name)
            continue
        want = TYPE_TABLES[family][kind]
        raise QuamotionConfigError(
            f"Column {name!r} of {table} is {have}, but the export loads it as {kind} ({want}). "
            f"Fix: ALTER TABLE {target} ALTER COLUMN {quote(hook, name)} TYPE {want} "
            f"USING {quote(hook, name)}::{want} (PostgreSQL), or load into a new table, or drop this one."
        )
    missing = [c for c in extra if c not in existing]
    if existing and missing:
        raise QuamotionConfigError(
            f"{table} has no column(s) {missing}: it was not created by this export; load into a new table."
        )
    if legacy:
        log.warning(
            "%s has text column(s) %s (a table from before typed columns): loaded as text. Recreate the "
            "table (or ALTER its columns) for typed columns.",
            table,
            ", ".join(repr(c) for c in legacy),
        )
    return kept, kinds


def _lock(hook: Any, cursor: Any, target: str) -> None:
    key = f"airflow_provider_quamotion:{target}"
    cursor.execute(f"SELECT pg_advisory_xact_lock(hashtextextended({hook.placeholder}, 0))", (key,))


def _ensure_key_index(
    hook: Any, cursor: Any, family: str, table: str, target: str, key: tuple[str, ...]
) -> None:
    """The unique index ``ON CONFLICT`` needs (PostgreSQL, SQLite); created when missing."""
    if family not in ("postgres", "sqlite"):
        return
    bare = str(table).split(".")[-1].strip()
    index = f"{bare}_{'_'.join(key)}_key"[:63]
    cols = ", ".join(quote(hook, k) for k in key)
    if family == "postgres":
        _lock(hook, cursor, target)
        cursor.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {quote(hook, index)} ON {target} ({cols})")
        return
    parts = [p.strip() for p in str(table).split(".")]
    prefix = f"{quote(hook, parts[0])}." if len(parts) > 1 else ""
    cursor.execute(
        f"CREATE UNIQUE INDEX IF NOT EXISTS {prefix}{quote(hook, index)} ON {quote(hook, bare)} ({cols})"
    )


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


def _begin(conn: Any, family: str) -> None:
    """Open the transaction explicitly where the driver would run DDL outside one (sqlite3, DuckDB)."""
    import sqlite3

    if family == "duckdb":
        conn.execute("BEGIN TRANSACTION")
    elif isinstance(conn, sqlite3.Connection) and not conn.in_transaction:
        # IMMEDIATE: take the write lock now; a deferred transaction that read first fails with
        # "database is locked" instead of waiting when another load writes meanwhile.
        conn.execute("BEGIN IMMEDIATE")


def _chain(first: Row | None, rest: Iterator[Row]) -> Iterator[Row]:
    if first is not None:
        yield first
    yield from rest


def lineage_dataset(conn_id: str, table: str) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a table: ``postgres://host:port`` + ``database.table``."""
    from airflow_provider_quamotion.compat import BaseHook

    conn = BaseHook.get_connection(conn_id)
    scheme = conn.conn_type or "sql"
    if conn.host:
        authority = f"{conn.host}:{conn.port}" if conn.port else str(conn.host)
        name = ".".join(p for p in (conn.schema, table) if p)
        return f"{scheme}://{authority}", name
    return f"{scheme}://{conn.schema or ''}", table
