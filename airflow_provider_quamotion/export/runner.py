"""One export, start to finish: resource -> record stream -> file or table, and its XCom summary."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_quamotion.api import FIELD_TYPES, RESOURCE_KEYS
from airflow_provider_quamotion.exceptions import QuamotionConfigError
from airflow_provider_quamotion.export.columns import Columns, check_fields, check_schema
from airflow_provider_quamotion.export.source import iter_rows, resolve_resource
from airflow_provider_quamotion.export.sql import DEFAULT_SQL_BATCH_SIZE, db_hook_for, load_table
from airflow_provider_quamotion.export.window import Window
from airflow_provider_quamotion.export.writers import DEFAULT_BATCH_SIZE, check_format, write_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """What an export did.

    :param summary: the small XCom value: destination, rows, since, until, resource.
    :param source_namespace: OpenLineage namespace of the input (``quamotion://host``).
    :param source_name: OpenLineage name of the input (``project/resource``).
    :param target_namespace: OpenLineage namespace of a file output: ``file``, or the store's own
        (``s3://bucket``, without the connection id); ``None`` for a table.
    :param target_name: OpenLineage name of a file output: the absolute path or the object key.
    """

    summary: dict[str, Any]
    source_namespace: str
    source_name: str
    target_namespace: str | None = None
    target_name: str | None = None


def check_target(destination: Any, sql_conn_id: str | None, table: str | None) -> None:
    """Exactly one target: ``destination``, or ``sql_conn_id`` with ``table``."""
    if destination is not None and (sql_conn_id or table):
        raise QuamotionConfigError("Pass either destination= (a file) or sql_conn_id= and table=, not both.")
    if destination is None and not (sql_conn_id and table):
        raise QuamotionConfigError(
            "Nothing to export to: pass destination= (a path or URI) or both sql_conn_id= and table=."
        )


def run_export(
    *,
    quamotion_conn_id: str,
    resource: str | None,
    endpoint: str | None = None,
    record_path: str | None = None,
    params: Mapping[str, Any] | None = None,
    destination: Any = None,
    fmt: str = "jsonl",
    sql_conn_id: str | None = None,
    table: str | None = None,
    since: Any = None,
    until: Any = None,
    fields: Sequence[str] | None = None,
    max_concurrency: int = 8,
    batch_size: int | None = None,
    hook_settings: Mapping[str, Any] | None = None,
    schema: Mapping[str, str] | None = None,
    mode: str = "replace",
    add_new_columns: bool = False,
) -> ExportResult:
    """Run one export (see :class:`~airflow_provider_quamotion.operators.quamotion.QuamotionExportOperator`).

    :param hook_settings: keyword arguments of the hook (overrides of the connection's settings).
    """
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook
    from airflow_provider_quamotion.storage import lineage_of, uri_of

    res = resolve_resource(resource, endpoint)
    window = Window.of(since, until)
    check_target(destination, sql_conn_id, table)
    fields = check_fields(fields)
    if int(max_concurrency) < 1:
        raise QuamotionConfigError(f"max_concurrency must be at least 1, not {max_concurrency}.")
    db_hook = db_hook_for(sql_conn_id) if destination is None and sql_conn_id else None
    if db_hook is None:
        fmt = check_format(fmt)
    default_fields = res.fields if res is not None else ()
    types = FIELD_TYPES.get(res.name) if res is not None else None
    check_schema(schema)
    if mode not in ("replace", "merge"):
        raise QuamotionConfigError(f"mode={mode!r}: use 'replace' or 'merge'.")
    windowed = res is not None and res.windowed
    label = res.name if res is not None else str(endpoint)

    hook = QuamotionHook(
        quamotion_conn_id, **{"pool_size": int(max_concurrency) + 2, **(hook_settings or {})}
    )
    rows = iter_rows(
        hook,
        res,
        window=window,
        endpoint=endpoint,
        record_path=record_path,
        params=params,
        max_concurrency=int(max_concurrency),
    )
    target: tuple[str | None, str | None] = (None, None)
    try:
        if db_hook is not None:
            assert table is not None
            n = load_table(
                db_hook,
                table,
                rows,
                Columns(fields, default_fields, schema if schema is not None else types),
                windowed=windowed,
                window=window,
                batch_size=batch_size or DEFAULT_SQL_BATCH_SIZE,
                mode=mode,
                key=RESOURCE_KEYS.get(res.name, ()) if res is not None else (),
                add_new_columns=add_new_columns,
                scheduled_tz=hook.settings.scheduled_tzinfo,
            )
            where = str(table)
        else:
            n = write_file(
                (row.record for row in rows),
                destination,
                fmt,
                fields=fields,
                default_fields=default_fields,
                batch_size=batch_size or DEFAULT_BATCH_SIZE,
            )
            where = uri_of(destination)
            target = lineage_of(destination)
        namespace, name = _source(hook, label)
    finally:
        rows.close()
        hook.close()
    since_iso, until_iso = window.iso()
    log.info("Exported %d %s rows to %s", n, label, where)
    summary = {"destination": where, "rows": n, "since": since_iso, "until": until_iso, "resource": label}
    return ExportResult(summary, namespace, name, *target)


def _source(hook: Any, label: str) -> tuple[str, str]:
    """OpenLineage input of an export: ``quamotion://host`` and ``project/resource``."""
    settings = hook.settings
    namespace = f"quamotion://{urlsplit(settings.base_url).netloc}"
    session = hook.__dict__.get("_session")
    root = getattr(session, "_api_root", None) if session is not None else None
    project = settings.project
    if not project and root:
        parts = [p for p in str(root).split("/") if p]
        project = parts[-2] if len(parts) >= 2 else None
    return namespace, f"{project}/{label.lstrip('/')}" if project else label.lstrip("/")
