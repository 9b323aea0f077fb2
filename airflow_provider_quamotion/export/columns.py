"""The column rule of tabular exports (csv, parquet, SQL) and how a value becomes a cell.

Tabular formats need their columns before the first row, and an export streams, so the columns are
fixed up front: ``fields=`` when given, else the resource's known fields (:data:`api.RESOURCES`),
else (``endpoint=``) the first record's keys. A key outside the columns is left out of the row (a
warning names it once); the SQL loader keeps every record whole in its ``_record`` column.

Cells: strings as they are, ``None`` as empty/NULL, numbers and booleans as JSON text (``1``,
``152.9``, ``true``), objects and arrays as compact JSON text.

Typed columns (the SQL export): a column may declare one of :data:`COLUMN_TYPES` (``text``,
``integer``, ``float``, ``boolean``, ``timestamp``, ``json``); :func:`typed` converts a value to it,
or reports that it does not fit (the loader then stores NULL; the record stays whole in ``_record``).
Timestamps are ISO 8601 strings; one without an offset is UTC.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow_provider_quamotion.api import parse_timestamp
from airflow_provider_quamotion.exceptions import QuamotionConfigError

log = logging.getLogger(__name__)

#: The key a record that is not a JSON object goes under in a tabular export.
SCALAR_KEY = "value"


#: One encoder for every value (``json.dumps`` with options builds a new encoder per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def _c_encoder() -> Callable[[Any], str]:
    """``_ENCODER.encode`` without its per-call set-up: the C encoder ``JSONEncoder.encode`` builds on
    every call (with a closure), built once. Without the circular-reference check (records come from
    JSON, which cannot nest into itself: a cyclic value fails with ``RecursionError``), so one encoder
    serves every thread. ``_ENCODER.encode`` where the C encoder is missing or differs (checked once)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _ENCODER.encode
    try:
        chunks = make(None, str, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    except TypeError:  # another signature
        return _ENCODER.encode
    join = "".join

    def encode(value: Any) -> str:
        return join(chunks(value, 0))

    probe = {"a": [1, 2.5, None, True, 'é\t"\n', {"b": float("inf")}], "c": dt.date(2024, 1, 2)}
    try:
        same = encode(probe) == _ENCODER.encode(probe) and encode("x\ty") == _ENCODER.encode("x\ty")
    except Exception:  # any failure: the standard path
        same = False
    return encode if same else _ENCODER.encode


_encode = _c_encoder()

TEXT = "text"
INTEGER = "integer"
FLOAT = "float"
BOOLEAN = "boolean"
TIMESTAMP = "timestamp"
JSON = "json"
#: The column types a schema may declare.
COLUMN_TYPES = (TEXT, INTEGER, FLOAT, BOOLEAN, TIMESTAMP, JSON)

#: What :func:`typed` returns for a value that does not fit its column's type.
MISFIT: Any = object()


def to_json(value: Any) -> str:
    """Compact JSON, keys in the order served, non-ASCII kept."""
    return _encode(value)


def check_schema(schema: Mapping[str, str] | None) -> dict[str, str] | None:
    """Validate ``schema=``: column name -> one of :data:`COLUMN_TYPES`."""
    if schema is None:
        return None
    if not isinstance(schema, Mapping) or not schema:
        raise QuamotionConfigError(f"schema={schema!r} must be a non-empty mapping of column name to type.")
    out: dict[str, str] = {}
    for name, kind in schema.items():
        k = str(kind).strip().lower()
        if not str(name) or k not in COLUMN_TYPES:
            raise QuamotionConfigError(
                f"schema: column {name!r} has type {kind!r}; the types are {', '.join(COLUMN_TYPES)}."
            )
        out[str(name)] = k
    return out


def typed(value: Any, kind: str, naive_tz: dt.tzinfo = dt.timezone.utc) -> Any:
    """``value`` as a Python value of column type ``kind``; ``None`` stays ``None``; :data:`MISFIT`
    when it does not fit (``"abc"`` as an integer, ``1.5`` as a boolean, a malformed timestamp).

    Integers accept ints and integral strings; floats accept numbers and numeric strings (not
    ``nan``/``inf``); booleans accept ``true``/``false`` and the strings ``"true"``/``"false"``;
    timestamps accept ISO 8601 strings (``Z``, an offset, or none = ``naive_tz``, UTC unless
    given; :func:`~airflow_provider_quamotion.api.parse_timestamp`) and give aware UTC datetimes;
    JSON takes any value and gives its compact JSON text; text takes strings as they are and
    anything else as :func:`cell` gives it.
    """
    if value is None:
        return None
    if kind == TEXT:
        return cell(value)
    if kind == JSON:
        return to_json(value)
    if kind == INTEGER:
        if isinstance(value, bool):
            return MISFIT
        if isinstance(value, int):
            return value if -(2**63) <= value < 2**63 else MISFIT
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return typed(int(value.strip()), INTEGER)
            except ValueError:
                return MISFIT
        return MISFIT
    if kind == FLOAT:
        if isinstance(value, bool):
            return MISFIT
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                return MISFIT
        else:
            return MISFIT
        return number if math.isfinite(number) else MISFIT
    if kind == BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return MISFIT
    if kind == TIMESTAMP:
        if not isinstance(value, str) or not value.strip():
            return MISFIT
        try:
            return parse_timestamp(value, naive_tz)
        except ValueError:
            return MISFIT
    raise QuamotionConfigError(f"Unknown column type {kind!r}; the types are {', '.join(COLUMN_TYPES)}.")


def cell(value: Any) -> str | None:
    """A value as text (see the module docstring); ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return to_json(value)


def as_mapping(record: Any) -> Mapping[str, Any]:
    """A record as a mapping (a bare value goes under ``"value"``)."""
    return record if isinstance(record, Mapping) else {SCALAR_KEY: record}


def check_fields(fields: Sequence[str] | None) -> tuple[str, ...] | None:
    """Validate ``fields=``: distinct, non-empty names."""
    if fields is None:
        return None
    if isinstance(fields, str):
        fields = [f.strip() for f in fields.split(",")]
    names = tuple(str(f) for f in fields)
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise QuamotionConfigError(f"fields={list(fields)!r} must be a non-empty list of distinct names.")
    return names


class Columns:
    """Decides the columns once and projects records onto them.

    :param fields: the user's ``fields=``, or ``None``.
    :param default: the resource's known fields (empty for ``endpoint=``).

    :param types: column name -> type (:data:`COLUMN_TYPES`) for the SQL export; a column without
        one is text. ``None``: every column is text (today's rule for ``endpoint=`` exports).
    """

    def __init__(
        self,
        fields: Sequence[str] | None,
        default: Sequence[str] = (),
        types: Mapping[str, str] | None = None,
    ) -> None:
        self.names: tuple[str, ...] | None = check_fields(fields) or (tuple(default) or None)
        self.types: dict[str, str] = (check_schema(types) or {}) if types else {}
        self._warned: set[str] = set()

    def type_of(self, name: str) -> str:
        """The declared type of column ``name`` (``text`` when none is declared)."""
        return self.types.get(name, TEXT)

    def fix(self, first: Any) -> tuple[str, ...]:
        """The columns, taken from ``first`` (the first record) when nothing else decided them."""
        if self.names is None:
            self.names = tuple(str(k) for k in as_mapping(first)) if first is not None else (SCALAR_KEY,)
        return self.names

    def values(self, record: Any) -> list[Any]:
        """The record's values in column order (missing keys are ``None``)."""
        names = self.names if self.names is not None else self.fix(record)
        mapping = as_mapping(record)
        if len(mapping) > len(names) or any(k not in names for k in mapping):
            self._warn_dropped(mapping, names)
        return [mapping.get(n) for n in names]

    def project(self, record: Any) -> Any:
        """``record`` reduced to ``fields=`` (in that order); unchanged when no ``fields=`` was given."""
        if self.names is None:
            return record
        mapping = as_mapping(record)
        return {n: mapping.get(n) for n in self.names}

    def _warn_dropped(self, mapping: Mapping[str, Any], names: tuple[str, ...]) -> None:
        new = [k for k in mapping if k not in names and k not in self._warned]
        if new:
            self._warned.update(new)
            log.warning(
                "Field(s) %s are not among the export's columns and are left out of this format; "
                "list them in fields= to keep them.",
                ", ".join(repr(k) for k in new),
            )
