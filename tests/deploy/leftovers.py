"""After the deployment tests: prove that no service they started is still running.

``python -m tests.deploy.leftovers`` reads the process ids the harness recorded
(``test-artifacts/deploy/pids.json``, see :mod:`tests.deploy.deployment`), and for each one still
alive (the process or its group) reports it, stops it by that id (SIGKILL to its group), and exits 1.
Exit 0: nothing left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tests.deploy.deployment import PIDS_FILE, start_time


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


def main(path: Path = PIDS_FILE) -> int:
    """Report and stop what survived; 0 when nothing did.

    :param path: the recorded ids.
    """
    if not path.exists():
        print(f"{path}: no deployment was started")
        return 0
    pids: dict[str, list[Any]] = json.loads(path.read_text())
    left = {name: pid for name, (pid, started) in pids.items() if alive(pid, started)}
    for name, pid in left.items():
        print(f"still running after the deployment tests: {name} (pid {pid}); stopping it", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        return 1
    print(f"nothing left running of the deployment tests ({len(pids)} services were stopped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
