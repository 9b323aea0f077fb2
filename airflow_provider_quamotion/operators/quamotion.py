"""Operators for Quamotion Cloud's REST API: call one endpoint, or export records to files or tables.

Importing this module is cheap (it runs at DAG-parse time): only ``airflow.sdk`` and the provider's
light modules are imported here; the hook, ``requests``, ``ijson``, ``pyarrow`` and common.sql are
imported inside ``execute``. No operator calls the network before ``execute``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_quamotion import api
from airflow_provider_quamotion.compat import AirflowFailException
from airflow_provider_quamotion.exceptions import QuamotionConfigError
from airflow_provider_quamotion.operators.base import QuamotionBaseOperator

# The test-run operators live in their own module; import them from here like every other operator.
from airflow_provider_quamotion.operators.test_run import (
    QuamotionJobArtifactsOperator,
    QuamotionStartTestRunOperator,
    QuamotionUploadOperator,
)
from airflow_provider_quamotion.runs import (
    DEFAULT_CONN_ID,
    check_hook_settings,  # noqa: F401  (re-exported for 0.x callers)
    check_mapping,
    hook_overrides,
    renamed_argument,
)

if TYPE_CHECKING:
    import requests
    from airflow.sdk import Context


DEFAULT_MAX_XCOM_BYTES = 64 * 1024


class QuamotionXComTooLargeError(QuamotionConfigError, AirflowFailException):
    """A value is too large for XCom; the task fails without retrying (a retry would repeat the call)."""


class QuamotionApiOperator(QuamotionBaseOperator):
    """Call one Quamotion Cloud endpoint and push the reply to XCom (or stream it to storage).

    The reply's JSON (its text when it is not JSON; ``None`` when it is empty) goes to XCom, through
    ``response_filter`` first when given. A value larger than ``max_xcom_bytes`` (its JSON encoding)
    fails the task without a retry and points to ``destination`` or the export operator: XCom is for
    ids, paths and counts. With ``destination`` the body streams to storage (atomically: a temporary
    object beside the destination, moved into place when complete) and the URI is returned instead.

    Retries of the transport (see :mod:`airflow_provider_quamotion.transport`) depend on the method:
    ``GET``, ``HEAD``, ``OPTIONS``, ``PUT`` are retried on 429, 5xx, dropped connections and timeouts;
    ``POST``, ``PATCH`` and ``DELETE`` only when the request certainly was not processed (429 or a
    refused connection), so they are never silently repeated after they may have reached the server.
    A 401 renews the token and resends once, for every method (the server processed nothing).

    :param endpoint: ``"testRun"`` (project-relative) or ``"/api/version"`` (from the host root). Templated.
    :param method: the HTTP method.
    :param query_params: query parameters. Templated. (Not ``params``: Airflow reserves that name for
        DAG and task params and merges the DAG's into it.)
    :param json: a JSON body. Templated.
    :param data: a form or raw body. Templated.
    :param headers: extra headers (``Authorization`` is set by the hook). Templated.
    :param response_filter: ``callable(response) -> value``; its result goes to XCom instead of the
        parsed body (not allowed with ``destination``).
    :param destination: a file: a local path, a URI or an ``ObjectStoragePath``; the body streams there
        and the task returns its URI. Templated.
    :param output_path: deprecated name of ``destination`` (one release, with a warning).
    :param max_xcom_bytes: the largest value (JSON-encoded, in bytes) pushed to XCom; ``None`` for no limit.
    :param quamotion_conn_id: the Airflow connection ID (templated).
    :param hook_params: per-task overrides of the connection's settings, as for the sensors:
        ``{"timeout": 30}``, ``{"retry": {"max_attempts": 2}}`` (a dict or a ``RetryPolicy``),
        ``{"project": "acme"}``.
    :param hook_settings: deprecated name of ``hook_params`` (one release, with a warning).
    """

    template_fields: Sequence[str] = (
        "endpoint",
        "query_params",
        "json",
        "data",
        "headers",
        "destination",
        "quamotion_conn_id",
    )
    template_fields_renderers = {"json": "json", "query_params": "json", "headers": "json"}
    ui_color = "#e8f3fc"

    def __init__(
        self,
        *,
        endpoint: str,
        method: str = "GET",
        query_params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        response_filter: Callable[[requests.Response], Any] | None = None,
        destination: Any = None,
        max_xcom_bytes: int | None = DEFAULT_MAX_XCOM_BYTES,
        quamotion_conn_id: str = DEFAULT_CONN_ID,
        hook_params: Mapping[str, Any] | None = None,
        hook_settings: Mapping[str, Any] | None = None,
        output_path: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        destination = renamed_argument("output_path", output_path, "destination", destination)
        if response_filter is not None and destination is not None:
            raise QuamotionConfigError(
                "response_filter and destination cannot be combined: with destination the body streams "
                "to storage and the task returns its URI."
            )
        if max_xcom_bytes is not None and max_xcom_bytes < 0:
            raise QuamotionConfigError("max_xcom_bytes must be a positive number of bytes, or None.")
        self.endpoint = endpoint
        self.method = method.upper()
        self.query_params = query_params
        self.json = json
        self.data = data
        self.headers = headers
        self.response_filter = response_filter
        self.destination = destination
        self.max_xcom_bytes = max_xcom_bytes
        self.init_quamotion(
            quamotion_conn_id=quamotion_conn_id, hook_params=hook_params, hook_settings=hook_settings
        )

    @property
    def output_path(self) -> Any:
        """The former name of :attr:`destination` (read-only; removed in the next release)."""
        return self.destination

    def _request_kwargs(self) -> dict[str, Any]:
        params = check_mapping("query_params", self.query_params)
        headers = check_mapping("headers", self.headers)
        kwargs = {"params": params, "json": self.json, "data": self.data, "headers": headers}
        return {k: v for k, v in kwargs.items() if v is not None}

    def execute(self, context: Context) -> Any:
        """Call the endpoint; return the (filtered) reply, or the URI of ``destination``."""
        hook = self.get_hook()
        try:
            if self.destination is not None:
                from airflow_provider_quamotion.storage import uri_of

                hook.download(self.endpoint, self.destination, method=self.method, **self._request_kwargs())
                uri = uri_of(self.destination)
                self.log.info("%s %s: the body was written to %s", self.method, self.endpoint, uri)
                return uri
            if self.response_filter is not None:
                response = hook.request(self.method, self.endpoint, **self._request_kwargs())
                return self._guard(self.response_filter(response))
            response = hook.request(self.method, self.endpoint, stream=True, **self._request_kwargs())
            with response:
                if not self.do_xcom_push:
                    for _ in response.iter_content(1 << 16):
                        pass
                    return None
                body = self._read_capped(response)
                return self._guard(_decode(response, body))
        finally:
            hook.close()

    def _read_capped(self, response: requests.Response) -> bytes:
        """The body, refusing to read more than the XCom limit allows (a large reply is not loaded)."""
        limit = self.max_xcom_bytes
        if limit is None or not self.do_xcom_push:
            return response.content
        response.raw.decode_content = True
        body = response.raw.read(limit + 1) or b""
        if len(body) > limit:
            raise self._too_large(f"more than {limit} bytes")
        return body

    def _guard(self, value: Any) -> Any:
        if self.max_xcom_bytes is None or not self.do_xcom_push:
            return value
        size = len(json.dumps(value, default=str, separators=(",", ":")).encode("utf-8"))
        if size > self.max_xcom_bytes:
            raise self._too_large(f"{size} bytes")
        return value

    def _too_large(self, size: str) -> QuamotionXComTooLargeError:
        return QuamotionXComTooLargeError(
            f"The reply of {self.method} {self.endpoint} is {size}, over the XCom limit of "
            f"{self.max_xcom_bytes} bytes (max_xcom_bytes). XCom is for small values: set destination= "
            "(output_path= before 0.2) to stream the body to a file or object storage (the task returns "
            "its URI), use "
            "QuamotionExportOperator for lists of records, or pass response_filter= to keep only what "
            "later tasks need."
        )


def _decode(response: requests.Response, body: bytes) -> Any:
    """JSON when the reply is JSON, its text otherwise, ``None`` when empty."""
    if not body.strip():
        return None
    ctype = (response.headers.get("Content-Type") or "").lower()
    if "json" in ctype or not ctype.startswith("text/"):
        try:
            return json.loads(body)
        except ValueError:
            pass
    charset = (response.encoding or "utf-8") if "charset=" in ctype else "utf-8"
    return body.decode(charset, errors="replace")


class QuamotionExportOperator(QuamotionBaseOperator):
    """Export Quamotion Cloud records to a file (jsonl, csv, parquet) or a SQL table, streamed and atomic.

    Rows flow from the API to the destination without holding the export in memory: lists are parsed
    incrementally, and for ``jobs`` each test run's jobs are fetched concurrently (at most
    ``max_concurrency`` requests, one token and one connection pool shared) and written in run order.

    A file is written to a temporary object beside ``destination`` and moved into place when complete;
    a table is loaded in one transaction that first deletes the rows being replaced (the window's rows
    for ``test_runs`` and ``jobs``, all rows otherwise). A failed export leaves no partial file and no
    table change; re-running gives the same output. XCom gets a summary:
    ``{"destination", "rows", "since", "until", "resource"}``.

    **Asset events.** A successful export emits its destination as an Asset event, so downstream DAGs
    can be scheduled on the data: the Asset's URI is the file's (``file:///abs/path``,
    ``s3://bucket/key``) or, for a table, the table under the SQL connection's URI
    (``postgres://host:5432/database/schema/table``, ``mysql://host:3306/database/table``,
    ``sqlite:///path/to.db/table``), and the event's extra is ``{"rows", "since", "until", "resource",
    "format"}``. The event goes through the ``AssetAlias`` ``asset_alias`` (an outlet of the task,
    default ``quamotion_export__{dag_id}__{task_id}``), since a templated destination is only known
    when the task runs; every ``Asset`` given in ``outlets`` gets the same extra. A mapped export
    (``partial().expand()``) is built only when it runs, so declare its alias at parse time:
    ``partial(asset_alias="runs", outlets=[AssetAlias("runs")])``.

    :param resource: ``test_runs``, ``jobs`` (one row per job, its run's ``testRunId`` added),
        ``applications``, ``test_packages``, ``device_groups``, ``schedules`` or ``projects``. Templated.
    :param destination: a local path, a URI (``s3://``, ``gs://``, ``file://``, ``memory://``...) or an
        ``ObjectStoragePath``, e.g. ``"s3://lake/quamotion/dt={{ ds }}/test_runs.jsonl"``. Templated.
    :param format: ``jsonl``, ``csv`` or ``parquet`` (the ``parquet`` extra). Templated.
    :param sql_conn_id: an Airflow connection of a SQL database (common.sql), instead of ``destination``.
        Templated.
    :param table: the table to load (created when missing). Templated.
    :param since: inclusive start of the window on a test run's ``scheduled`` (ISO 8601; no offset = UTC;
        ``None`` = unbounded), e.g. ``"{{ data_interval_start }}"``. Templated.
    :param until: exclusive end of the window. Templated.
    :param fields: the fields to keep, in order: the columns of csv, parquet and SQL (default: the
        resource's known fields), a projection for jsonl (default: whole records). Templated (a list,
        or a comma-separated string).
    :param max_concurrency: parallel requests for ``jobs``.
    :param endpoint: any other list endpoint, instead of ``resource``. Templated.
    :param record_path: dotted path of the array inside ``endpoint``'s reply (e.g. ``"data.items"``).
    :param query_params: query parameters of the list request. Templated.
    :param batch_size: records per parquet row group / SQL ``executemany`` batch.
    :param quamotion_conn_id: the Airflow connection ID (templated).
    :param hook_params: per-task overrides of the connection's settings, as for the sensors:
        ``{"timeout": 30}``, ``{"retry": {"max_attempts": 2}}`` (a dict or a ``RetryPolicy``).
        They apply to every request of the export, the ``jobs`` fan-out included.
    :param hook_settings: deprecated name of ``hook_params`` (one release, with a warning).
    :param schema: SQL column types for ``endpoint=`` exports (``{"duration": "float"}``; types
        ``text``, ``integer``, ``float``, ``boolean``, ``timestamp``, ``json``), or to override a
        resource's (see ``api.FIELD_TYPES``). Default for ``endpoint=``: every column text.
    :param mode: SQL only: ``replace`` (the window's rows) or ``merge`` (upsert by the resource's key:
        ``testRunId``, a job's ``id``).
    :param add_new_columns: SQL only: add a known field's column an existing table lacks.
    :param emit_asset_event: emit the destination as an Asset event (see above).
    :param asset_alias: the name of the ``AssetAlias`` the event goes through.
    """

    template_fields: Sequence[str] = (
        "resource",
        "destination",
        "format",
        "fields",
        "sql_conn_id",
        "table",
        "since",
        "until",
        "endpoint",
        "query_params",
        "quamotion_conn_id",
    )
    ui_color = "#e8f3fc"

    def __init__(
        self,
        *,
        resource: str | None = None,
        destination: Any = None,
        format: str = "jsonl",
        sql_conn_id: str | None = None,
        table: str | None = None,
        since: Any = None,
        until: Any = None,
        fields: Sequence[str] | None = None,
        max_concurrency: int = 8,
        endpoint: str | None = None,
        record_path: str | None = None,
        query_params: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        quamotion_conn_id: str = DEFAULT_CONN_ID,
        hook_params: Mapping[str, Any] | None = None,
        hook_settings: Mapping[str, Any] | None = None,
        schema: Mapping[str, str] | None = None,
        mode: str = "replace",
        add_new_columns: bool = False,
        emit_asset_event: bool = True,
        asset_alias: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("replace", "merge"):
            raise QuamotionConfigError(f"mode={mode!r}: use 'replace' or 'merge'.")
        self.schema, self.mode, self.add_new_columns = schema, mode, bool(add_new_columns)
        if resource and endpoint:
            raise QuamotionConfigError("Pass either resource= or endpoint=, not both.")
        if not resource and not endpoint:
            raise QuamotionConfigError(
                f"resource= is required: one of {', '.join(api.RESOURCES)} (or endpoint=)."
            )
        if resource and "{{" not in resource and resource not in api.RESOURCES:
            raise QuamotionConfigError(f"Unknown resource {resource!r}; known: {', '.join(api.RESOURCES)}.")
        if destination is not None and (sql_conn_id or table):
            raise QuamotionConfigError(
                "Pass either destination= (a file) or sql_conn_id= and table=, not both."
            )
        if destination is None and not (sql_conn_id and table):
            raise QuamotionConfigError(
                "Nothing to export to: pass destination= (a path or URI) or both sql_conn_id= and table=."
            )
        _check_format(format)
        if int(max_concurrency) < 1:
            raise QuamotionConfigError(f"max_concurrency must be at least 1, not {max_concurrency}.")
        self.resource = resource
        self.destination = destination
        self.format = str(format).lower()
        self.sql_conn_id = sql_conn_id
        self.table = table
        self.since = since
        self.until = until
        self.fields: Any = list(fields) if fields is not None and not isinstance(fields, str) else fields
        self.max_concurrency = int(max_concurrency)
        self.endpoint = endpoint
        self.record_path = record_path
        self.query_params = query_params
        self.batch_size = batch_size
        self.init_quamotion(
            quamotion_conn_id=quamotion_conn_id, hook_params=hook_params, hook_settings=hook_settings
        )
        self._lineage: tuple[str, str] | None = None
        self.emit_asset_event = bool(emit_asset_event)
        self.asset_alias = asset_alias or f"quamotion_export__{self.dag_id}__{self.task_id}"
        if self.emit_asset_event:
            from airflow.sdk import AssetAlias

            alias = AssetAlias(self.asset_alias)
            if alias not in self.outlets:  # a mapped task declares it in partial(outlets=...)
                self.outlets = [*self.outlets, alias]

    def execute(self, context: Context) -> dict[str, Any]:
        """Run the export; returns the XCom summary (and emits the destination's Asset event)."""
        from airflow_provider_quamotion.export.runner import run_export

        self.format = _check_format(self.format)
        result = run_export(
            quamotion_conn_id=self.quamotion_conn_id,
            resource=self.resource or None,
            endpoint=self.endpoint or None,
            record_path=self.record_path,
            params=check_mapping("query_params", self.query_params),
            destination=self.destination,
            fmt=self.format,
            sql_conn_id=self.sql_conn_id,
            table=self.table,
            since=self.since,
            until=self.until,
            fields=_field_list(self.fields),
            max_concurrency=self.max_concurrency,
            batch_size=self.batch_size,
            hook_settings=hook_overrides(self.hook_params),
            schema=self.schema,
            mode=self.mode,
            add_new_columns=self.add_new_columns,
        )
        self._lineage = (result.source_namespace, result.source_name)
        if self.emit_asset_event:
            self._emit_asset_event(context, result.summary)
        return result.summary

    def destination_uri(self) -> str:
        """The Asset URI of the (rendered) destination: the file's, or the table under its connection's."""
        if self.destination is not None:
            namespace, name = _storage_dataset(self.destination)
            return f"file://{name}" if namespace == "file" else f"{namespace.rstrip('/')}/{name}"
        return table_asset_uri(str(self.sql_conn_id), str(self.table))

    def _emit_asset_event(self, context: Context, summary: Mapping[str, Any]) -> None:
        """The destination as an Asset event through the alias; the same extra on every outlet Asset."""
        from airflow.sdk import Asset, AssetAlias

        extra: dict[str, Any] = {k: summary.get(k) for k in ("rows", "since", "until", "resource")}
        extra["format"] = self.format if self.destination is not None else "sql"
        uri = self.destination_uri()
        events: Any = context.get("outlet_events")
        if events is None:  # called outside Airflow's task runner (a unit test, a script)
            self.log.info("No outlet_events in the context: no Asset event for %s.", uri)
            return
        declared = [o for o in self.outlets if isinstance(o, Asset)]
        for asset in declared:
            events[asset].extra.update(extra)
        if not any(a.uri == uri for a in declared):
            try:
                asset = Asset(uri=uri)
            except ValueError as err:  # the export is done: a URI Airflow refuses only costs the event
                self.log.warning("No Asset event for %s: Airflow refuses the URI (%s).", uri, err)
                return
            events[AssetAlias(self.asset_alias)].add(asset, extra=extra)
        self.log.info("Asset event for %s: %s", uri, extra)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the Quamotion endpoint as input, the file or table as output."""
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs = []
        if self._lineage is not None:
            inputs.append(Dataset(namespace=self._lineage[0], name=self._lineage[1]))
        if self.destination is not None:
            ns, name = _storage_dataset(self.destination)
        else:
            from airflow_provider_quamotion.export.sql import lineage_dataset

            ns, name = lineage_dataset(str(self.sql_conn_id), str(self.table))
        return OperatorLineage(inputs=inputs, outputs=[Dataset(namespace=ns, name=name)])


def _check_format(value: Any) -> str:
    """``value`` in lower case when it is a known format (or a template, checked again when rendered)."""
    text = str(value).lower()
    if text not in ("jsonl", "csv", "parquet") and "{{" not in text:
        raise QuamotionConfigError(f"format={value!r} is not one of jsonl, csv, parquet.")
    return text


def _field_list(value: Any) -> list[str] | None:
    """The rendered ``fields``: a list, or a comma-separated string (a rendered list is refused clearly)."""
    if value is None or isinstance(value, list | tuple):
        return None if value is None else [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):
        raise QuamotionConfigError(
            f"fields is the string {text[:80]!r}: a list that Jinja rendered to text. Set "
            "render_template_as_native_obj=True on the DAG, or pass the names comma-separated."
        )
    return [name.strip() for name in text.split(",") if name.strip()]


def table_asset_uri(sql_conn_id: str, table: str) -> str:
    """The Asset URI of ``table`` under the SQL connection's URI (no credentials in it).

    ``postgres://host:5432/database/schema/table`` (schema ``public`` when ``table`` names none),
    ``mysql://host:3306/database/table``, other types ``{type}://{host}[:port]/{database}/{table}``
    (``sqlite:///path/to.db/table``).

    :param sql_conn_id: the SQL connection.
    :param table: the table, optionally ``schema.table``.
    """
    from airflow_provider_quamotion.compat import BaseHook
    from airflow_provider_quamotion.export.sql import lineage_dataset

    namespace, _ = lineage_dataset(sql_conn_id, table)
    conn = BaseHook.get_connection(sql_conn_id)
    database = (conn.schema or "").strip("/") if conn.host else ""
    parts = [p for p in table.split(".") if p]
    if conn.conn_type == "postgres" and len(parts) == 1:
        parts = ["public", *parts]
    path = "/".join(p for p in (database, *parts) if p)
    return f"{namespace.rstrip('/')}/{path}"


def _storage_dataset(destination: Any) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a path: ``file`` + absolute path, ``s3://bucket`` + key."""
    from airflow_provider_quamotion.storage import lineage_of

    return lineage_of(destination)


__all__ = [
    "QuamotionApiOperator",
    "QuamotionExportOperator",
    "QuamotionJobArtifactsOperator",
    "QuamotionStartTestRunOperator",
    "QuamotionUploadOperator",
    "QuamotionXComTooLargeError",
]
