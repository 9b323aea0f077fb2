"""``python -m airflow_provider_quamotion.sandbox`` = the ``quamotion-sandbox`` command."""

from airflow_provider_quamotion.sandbox.cli import main

raise SystemExit(main())
