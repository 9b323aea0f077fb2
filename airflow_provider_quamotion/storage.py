"""Where bytes land: local paths and Airflow object storage, written atomically.

:func:`atomic_writer` writes to a temporary object beside the destination and moves it into place
only when the block completes; on any error the temporary object is removed, so a failed download or
export leaves no partial file behind.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import IO, Any

TEMP_MARKER = ".quamotion-tmp-"


def is_local(destination: Any) -> bool:
    """Whether ``destination`` is a plain local path (``str`` without a scheme, or ``os.PathLike``)."""
    if isinstance(destination, str):
        return "://" not in destination or destination.startswith("file://")
    return isinstance(destination, os.PathLike) and not hasattr(destination, "fs")


def to_path(destination: Any) -> Any:
    """A local path as ``str``, or an ``ObjectStoragePath`` for a URI or an object storage path."""
    if is_local(destination):
        text = os.fspath(destination)
        return text[len("file://") :] if text.startswith("file://") else text
    if isinstance(destination, str):
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(destination)
    return destination


def uri_of(destination: Any) -> str:
    """A printable URI of a destination (``file://`` for local paths)."""
    path = to_path(destination)
    return f"file://{os.path.abspath(path)}" if isinstance(path, str) else str(path)


def remove_stale_temporaries(path: Any) -> int:
    """Remove temporary objects a killed writer left beside ``path`` (a SIGKILL skips every cleanup).

    Writing the same destination from two tasks at once is a race whoever wins; this only makes
    sure a rerun after a kill leaves nothing behind. Returns how many were removed.
    """
    pattern = f".{os.path.basename(str(path)) if isinstance(path, str) else path.name}{TEMP_MARKER}*"
    removed = 0
    with contextlib.suppress(Exception):
        if isinstance(path, str):
            import glob

            directory = os.path.dirname(os.path.abspath(path))
            for stale in glob.glob(os.path.join(glob.escape(directory), pattern)):
                os.unlink(stale)
                removed += 1
        else:
            for stale in path.parent.glob(pattern):
                stale.unlink()
                removed += 1
    return removed


@contextlib.contextmanager
def atomic_writer(destination: Any, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary object beside ``destination``; move it into place when the block succeeds.

    :param destination: a local path, a URI (``s3://...``, ``file://...``) or an ``ObjectStoragePath``.
    :param mode: ``"wb"`` or ``"w"``.
    """
    path = to_path(destination)
    suffix = f"{TEMP_MARKER}{uuid.uuid4().hex}"
    remove_stale_temporaries(path)
    if isinstance(path, str):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        temp = os.path.join(directory, f".{os.path.basename(path)}{suffix}")
        try:
            with open(temp, mode) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return
    with contextlib.suppress(Exception):
        path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.parent / f".{path.name}{suffix}"
    try:
        with temp_path.open(mode) as handle:
            yield handle
        temp_path.move(path)
    except BaseException:
        with contextlib.suppress(Exception):
            temp_path.unlink()
        raise
