"""The vendor's captured test runs and their jobs, as pairs, for the time zone of ``scheduled``.

Read from ``quamotion/QuamotionCloud.net`` ``CloudClient.Test/test_runs.json`` (each run's
``testRunId``, offsetless ``scheduled`` and ``commitId``) and ``CloudClient.Test/test_jobs.json`` (the
job of the same ``commitId``: its ``id`` and ``started``, which carries ``Z``). A run's first job
starts a few seconds to a minute after the run is scheduled.
"""

from __future__ import annotations

#: (testRunId, scheduled as captured, first job id, its started) for every run whose commit's job
#: was captured, newest first as in the captured list.
SCHEDULED_VS_STARTED: list[tuple[str, str, int, str]] = [
    ("7f487e20-1eab-4d0f-8c9d-e3054436e442", "2018-03-19T13:15:35", 58189675, "2018-03-19T13:15:43.239Z"),
    ("6774bf25-c57a-4ba3-bc45-67545cd79976", "2018-03-19T09:59:00", 58142388, "2018-03-19T09:59:04.274Z"),
    ("4dc53a55-d080-4ef7-8264-ad84b24fd7e2", "2018-03-16T13:34:41", 57821569, "2018-03-16T13:35:08.533Z"),
    ("7e5c457a-5ee4-402e-9605-4591a21a31ab", "2018-03-16T13:27:32", 57819619, "2018-03-16T13:27:39.562Z"),
    ("ee586d2f-9004-4a6d-beba-4b03a3383a3a", "2018-03-16T13:16:51", 57817290, "2018-03-16T13:16:57.741Z"),
    ("f6e017fa-7e06-4938-82de-35071793d985", "2018-03-16T11:35:50", 57797677, "2018-03-16T11:36:22.765Z"),
    ("34f80078-9476-46f9-b991-25e7d3270fc2", "2018-03-16T07:16:04", 57748832, "2018-03-16T07:16:06.876Z"),
    ("b56a6d2b-386a-456a-8582-0fa51f587b9b", "2018-03-16T05:53:12", 57737217, "2018-03-16T04:53:17.34Z"),
    ("b4eaa9d7-85e0-446f-a5c6-db99d2fc0fd7", "2018-03-16T05:52:21", 57737174, "2018-03-16T04:52:23.969Z"),
    ("1132381f-a84e-4edf-a943-1c7fb21bfd9f", "2018-03-16T05:41:55", 57736773, "2018-03-16T04:41:57.543Z"),
    ("389aef09-9aab-41d1-99c4-f9a665bf98b2", "2018-03-16T04:43:10", 57736824, "2018-03-16T04:43:13.507Z"),
    ("127ca9f0-64b2-4161-8b33-f6afe7031f79", "2018-03-14T12:39:01", 57363425, "2018-03-14T12:39:21.529Z"),
    ("83f0eeaf-8cc4-4ef3-8a87-df6b990d5c49", "2018-03-13T17:13:14", 57198653, "2018-03-13T17:13:19.075Z"),
    ("045df20c-da3f-4d16-9c5e-ef923c3abd4c", "2018-03-06T09:45:43", 55921845, "2018-03-06T09:45:46.087Z"),
]

#: The runs whose offsetless ``scheduled`` is one hour after their first job's start: local time
#: (CET, UTC+1 in March 2018, before the change to summer time on 25 March), not UTC.
LOCAL_TIME_RUNS = frozenset(
    {
        "b56a6d2b-386a-456a-8582-0fa51f587b9b",
        "b4eaa9d7-85e0-446f-a5c6-db99d2fc0fd7",
        "1132381f-a84e-4edf-a943-1c7fb21bfd9f",
    }
)
