"""Streamed multipart uploads: a file-like ``multipart/form-data`` body with a known length.

``requests`` builds ``files=`` bodies in memory; :class:`MultipartFile` instead reads the file in
chunks as the body is sent, so uploading a large .ipa costs no memory, and it rewinds for a retry.
"""

from __future__ import annotations

import mimetypes
import os
import stat
import uuid
from types import TracebackType
from typing import IO, Any

from airflow_provider_quamotion.exceptions import QuamotionConfigError


def _open_object(path: Any) -> tuple[IO[bytes], int]:
    """Open an object storage path for reading, stating it once (the open's own metadata request).

    Reads go through a :data:`~airflow_provider_quamotion.storage.BLOCK_SIZE` read-ahead buffer
    (``ObjectStoragePath.open`` would let s3fs buffer 50 MiB).
    """
    from airflow_provider_quamotion.storage import BLOCK_SIZE

    fs = getattr(path, "fs", None)
    if fs is not None and hasattr(path, "path"):
        stream: IO[bytes] = fs.open(str(path.path), "rb", block_size=BLOCK_SIZE)
    else:
        stream = path.open("rb")
    size = getattr(stream, "size", None)
    if size is None:
        info = path.stat()
        size = info["size"] if isinstance(info, dict) else info.st_size
    return stream, int(size)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _open_regular_file(path: str) -> IO[bytes]:
    """Open ``path`` for reading if it is a regular file, else a :class:`QuamotionConfigError`.

    A directory, a FIFO (whose open would wait for a writer), a device (``/dev/zero`` never ends)
    or a socket is refused before any request. The file is opened without blocking and checked on
    the open descriptor, so a path swapped between the check and the open is caught too.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise QuamotionConfigError(f"Cannot upload {path}: it is {_kind(mode)}, not a regular file.")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise QuamotionConfigError(f"Cannot upload {path}: it is {_kind(mode)}, not a regular file.")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class MultipartFile:
    """A ``multipart/form-data`` body holding one file part, read lazily.

    :param stream: the open binary file.
    :param size: its size in bytes.
    :param filename: the file name sent to the server.
    :param field: the form field name (Quamotion: ``files``).
    """

    def __init__(self, stream: IO[bytes], size: int, filename: str, field: str) -> None:
        self.stream = stream
        self.filename = filename
        boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={boundary}"
        ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        safe_name = filename.replace('"', "%22").replace("\r", "").replace("\n", "")
        self._head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{safe_name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        self._size = size
        self._start = stream.tell()
        self._pos = 0

    @classmethod
    def open(cls, path: Any, field: str) -> MultipartFile:
        """Open a local path or an ``ObjectStoragePath`` for upload."""
        local = isinstance(path, str | os.PathLike) and not hasattr(path, "fs")
        name = os.path.basename(os.fspath(path)) if local else str(getattr(path, "name", "upload"))
        try:
            if local:
                stream: IO[bytes] = _open_regular_file(os.fspath(path))
                size = os.fstat(stream.fileno()).st_size
            else:
                stream, size = _open_object(path)
        except FileNotFoundError:
            raise QuamotionConfigError(
                f"Cannot upload {os.fspath(path) if local else path}: no such file."
            ) from None
        except OSError as err:
            raise QuamotionConfigError(
                f"Cannot upload {os.fspath(path) if local else path}: {err.strerror or err}."
            ) from None
        return cls(stream, size, name, field)

    def __len__(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def read(self, size: int = -1) -> bytes:
        """Read the next part of the body."""
        if size is None or size < 0:
            size = len(self)
        out = bytearray()
        while len(out) < size and self._pos < len(self):
            head_len = len(self._head)
            if self._pos < head_len:
                piece = self._head[self._pos : self._pos + size - len(out)]
            elif self._pos < head_len + self._size:
                piece = self.stream.read(min(size - len(out), head_len + self._size - self._pos))
                if not piece:
                    raise QuamotionConfigError(f"{self.filename!r} changed size while being uploaded.")
            else:
                offset = self._pos - head_len - self._size
                piece = self._tail[offset : offset + size - len(out)]
            out += piece
            self._pos += len(piece)
        return bytes(out)

    def tell(self) -> int:
        """Position in the body."""
        return self._pos

    def seek(self, position: int) -> None:
        """Rewind (for a retry). Only the start is supported."""
        if position != 0:
            raise ValueError("MultipartFile can only seek to 0")
        self.stream.seek(self._start)
        self._pos = 0

    def close(self) -> None:
        """Close the file."""
        self.stream.close()

    def __enter__(self) -> MultipartFile:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
