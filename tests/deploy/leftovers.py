"""After the deployment tests: prove that no service they started is still running.

``python -m tests.deploy.leftovers`` reads the process ids each session of the harness recorded
(``test-artifacts/deploy/session-<pid>/pids.json``, see :mod:`tests.deploy.deployment`). A session
whose pytest process still runs is in use and left alone (another developer's, on a shared machine).
For an ended session, each service still alive is reported and stopped by its id (SIGKILL to its
group), and the exit code is 1. A session found clean has its record removed. Exit 0: nothing left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tests.deploy.deployment import ARTIFACTS, PIDS_FILE, start_time


def alive(pid: int, started: str | None) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs (not a zombie, not a later
    process that reuses the id).

    :param pid: a process id (the harness starts each service as the leader of its group).
    :param started: its start time as recorded (:func:`~tests.deploy.deployment.start_time`).
    """
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1]
    except (OSError, IndexError):
        return False
    return not state.startswith("Z") and (started is None or start_time(pid) == started)


def main(root: Path = ARTIFACTS) -> int:
    """Report and stop what ended sessions left running; 0 when nothing was.

    :param root: the folder of the sessions' records.
    """
    status = 0
    records = sorted(root.glob(f"*/{PIDS_FILE}"))
    for path in records:
        pids: dict[str, list[Any]] = json.loads(path.read_text())
        owner = pids.pop("owner", None)
        if owner is not None and alive(*owner):
            print(f"{path.parent.name}: its session is still running; not checked")
            continue
        left = {name: pid for name, (pid, started) in pids.items() if alive(pid, started)}
        for name, pid in left.items():
            print(
                f"still running after the deployment tests: {name} (pid {pid}); stopping it", file=sys.stderr
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            status = 1
        else:
            print(f"{path.parent.name}: nothing left running ({len(pids)} services were stopped)")
            path.unlink()
    return status


if __name__ == "__main__":
    sys.exit(main())
