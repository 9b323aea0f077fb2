"""The column rule of tabular exports (csv, parquet, SQL) and how a value becomes a cell.

Tabular formats need their columns before the first row, and an export streams, so the columns are
fixed up front: ``fields=`` when given, else the resource's known fields (:data:`api.RESOURCES`),
else (``endpoint=``) the first record's keys. A key outside the columns is left out of the row (a
warning names it once); the SQL loader keeps every record whole in its ``_record`` column.

Cells: strings as they are, ``None`` as empty/NULL, numbers and booleans as JSON text (``1``,
``152.9``, ``true``), objects and arrays as compact JSON text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_quamotion.exceptions import QuamotionConfigError

log = logging.getLogger(__name__)

#: The key a record that is not a JSON object goes under in a tabular export.
SCALAR_KEY = "value"


def to_json(value: Any) -> str:
    """Compact JSON, keys in the order served, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


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
    """

    def __init__(self, fields: Sequence[str] | None, default: Sequence[str] = ()) -> None:
        self.names: tuple[str, ...] | None = check_fields(fields) or (tuple(default) or None)
        self._warned: set[str] = set()

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
