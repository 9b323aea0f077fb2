"""Exports: record streams from the API -> writers (jsonl, csv, parquet) or a SQL table, atomically.

* :mod:`.window` - the ``[since, until)`` window on ``scheduled`` (offset-less times are UTC).
* :mod:`.source` - record streams: a resource's records parsed incrementally, and the ``jobs`` fan-out
  (bounded thread pool, run order kept, a bounded number of runs in flight).
* :mod:`.columns` - the column rule of tabular formats and how a value becomes a cell.
* :mod:`.writers` - jsonl, csv and parquet writers on :func:`~airflow_provider_quamotion.storage.atomic_writer`.
* :mod:`.sql` - loading into a table through a common.sql ``DbApiHook`` in one transaction.
* :mod:`.runner` - ties them together for :class:`~airflow_provider_quamotion.operators.quamotion.QuamotionExportOperator`.

Nothing here is imported at DAG-parse time; the operator imports it inside ``execute``.
"""
