"""Benchmarks of airflow-provider-quamotion against the local sandbox: ``python -m bench`` (``make bench``).

Every figure is measured side by side in one run and reported as medians and ratios (machines here are
noisy); nothing here is a timed assertion. The run prints a table and writes ``bench/results/latest.json``
and ``bench/results/latest.md``. Each measurement that needs a clean process (memory, token counts,
import time) runs in a fresh subprocess (:mod:`bench.workers`); the sandbox always runs in its own
process, on loopback only.
"""
