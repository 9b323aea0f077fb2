"""Writers: a stream of records -> one file (jsonl, csv or parquet), written atomically.

Every writer writes through :func:`~airflow_provider_quamotion.storage.atomic_writer`: a local file
is written beside the destination and renamed into place, an object (S3, GCS, Azure) is uploaded
straight to its key and appears only when the last record is written (one PUT up to 5 MiB, a
multipart upload of 5 MiB parts above). Any failure, ``KeyboardInterrupt`` and Airflow's task
termination included, leaves the destination as it was and nothing visible (a multipart upload is
aborted). Output is deterministic: the same records give the same bytes.

* ``jsonl``: one compact JSON object per line, keys in the order served (or ``fields=``' order).
* ``csv``: a header, then one row per record; the columns and cells follow
  :mod:`~airflow_provider_quamotion.export.columns` (nested values as JSON text); RFC 4180 quoting
  and ``\\r\\n`` line ends, UTF-8.
* ``parquet`` (the ``parquet`` extra, ``pyarrow``): written in row groups of ``batch_size`` records.
  Column types come from the first row group: all booleans -> ``bool``, all integers -> ``int64``,
  integers and floats -> ``double``, anything else (strings, nested values as JSON text, or a column
  with no value yet) -> ``string``. A later value that does not fit its column's type fails the
  export (nothing is written) and names the column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import IO, Any

from airflow_provider_quamotion.exceptions import QuamotionConfigError, QuamotionError
from airflow_provider_quamotion.export.columns import Columns, cell, to_json
from airflow_provider_quamotion.storage import atomic_writer

FORMATS = ("jsonl", "csv", "parquet")
DEFAULT_BATCH_SIZE = 10_000
_FLUSH_BYTES = 1 << 20


def check_format(fmt: str) -> str:
    """Validate ``format=``."""
    value = str(fmt).strip().lower()
    if value not in FORMATS:
        raise QuamotionConfigError(f"format={fmt!r} is not one of {', '.join(FORMATS)}.")
    if value == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise QuamotionConfigError(
                "format='parquet' needs pyarrow: pip install 'airflow-provider-quamotion[parquet]'."
            ) from None
    return value


def write_file(
    records: Iterable[Any],
    destination: Any,
    fmt: str,
    *,
    fields: Sequence[str] | None = None,
    default_fields: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """Write ``records`` to ``destination`` atomically; returns the number of records written.

    :param records: the records, consumed once, lazily.
    :param destination: a local path, a URI or an ``ObjectStoragePath``.
    :param fmt: ``jsonl``, ``csv`` or ``parquet``.
    :param fields: the user's ``fields=`` (a projection for jsonl, the columns for csv/parquet).
    :param default_fields: the resource's known fields, the csv/parquet columns without ``fields=``.
    :param batch_size: records per parquet row group.
    """
    fmt = check_format(fmt)
    with atomic_writer(destination, "wb") as out:
        if fmt == "jsonl":
            return _jsonl(records, out, Columns(fields))
        if fmt == "csv":
            return _csv(records, out, Columns(fields, default_fields))
        return _parquet(records, out, Columns(fields, default_fields), batch_size)


def _jsonl(records: Iterable[Any], out: IO[bytes], columns: Columns) -> int:
    n = 0
    buffer: list[str] = []
    size = 0
    for record in records:
        line = to_json(columns.project(record)) + "\n"
        buffer.append(line)
        size += len(line)
        n += 1
        if size >= _FLUSH_BYTES:
            out.write("".join(buffer).encode("utf-8"))
            buffer.clear()
            size = 0
    if buffer:
        out.write("".join(buffer).encode("utf-8"))
    return n


def _csv(records: Iterable[Any], out: IO[bytes], columns: Columns) -> int:
    text = io.StringIO()
    writer = csv.writer(text)
    iterator = iter(records)
    first = next(iterator, None)
    if first is None and columns.names is None:
        return 0
    writer.writerow(columns.fix(first))
    n = 0
    for record in _chain_first(first, iterator):
        writer.writerow([cell(v) for v in columns.values(record)])
        n += 1
        if text.tell() >= _FLUSH_BYTES:
            out.write(text.getvalue().encode("utf-8"))
            text.seek(0)
            text.truncate()
    out.write(text.getvalue().encode("utf-8"))
    return n


def _chain_first(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    if first is not None:
        yield first
    yield from rest


def _parquet(records: Iterable[Any], out: IO[bytes], columns: Columns, batch_size: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    iterator = iter(records)
    writer: Any = None
    schema: Any = None
    n = 0
    try:
        while True:
            batch = list(islice(iterator, max(1, batch_size)))
            if schema is None:
                names: tuple[str, ...] = columns.fix(batch[0]) if batch else (columns.names or ())
                rows = [columns.values(r) for r in batch]
                cols = [[row[i] for row in rows] for i in range(len(names))]
                schema = pa.schema(
                    [pa.field(name, _arrow_type(pa, c)) for name, c in zip(names, cols, strict=True)]
                )
                writer = pq.ParquetWriter(out, schema)
            else:
                rows = [columns.values(r) for r in batch]
                cols = [[row[i] for row in rows] for i in range(len(schema))]
            if not batch:
                break
            arrays = [
                pa.array(_convert(c, field.type, field.name, pa), type=field.type)
                for c, field in zip(cols, schema, strict=True)
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            n += len(batch)
    finally:
        if writer is not None:
            writer.close()
    return n


def _arrow_type(pa: Any, values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return pa.string()
    if all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def _convert(values: list[Any], typ: Any, name: str, pa: Any) -> list[Any]:
    if typ == pa.string():
        return [cell(v) for v in values]
    out: list[Any] = []
    for v in values:
        if v is None:
            out.append(None)
        elif (typ == pa.bool_() and isinstance(v, bool)) or (
            typ == pa.int64() and isinstance(v, int) and not isinstance(v, bool)
        ):
            out.append(v)
        elif typ == pa.int64() and isinstance(v, float) and v.is_integer():
            out.append(int(v))
        elif typ == pa.float64() and isinstance(v, int | float) and not isinstance(v, bool):
            out.append(float(v))
        else:
            raise QuamotionError(
                f"Parquet column {name!r} was typed {typ} from the first row group, but a later record "
                f"has {v!r}. Nothing was written. Export it as csv or jsonl, or raise batch_size so "
                "the first row group shows every kind of value."
            )
    return out
