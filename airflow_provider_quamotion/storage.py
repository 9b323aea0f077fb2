"""Where bytes land: local paths and Airflow object storage, written atomically.

:func:`atomic_writer` writes straight to the destination with the store's own atomicity:

* **local files** (plain paths, ``file://`` URIs and ``file://`` object storage paths): a temporary
  file beside the destination, fsynced, then ``os.replace``-d into place;
* **object stores** (``s3://``, ``gs://``, ``abfs://``...): an object appears only when its upload
  completes. Up to :data:`BLOCK_SIZE` bytes are held in memory and sent with one PUT when the block
  completes; a larger file becomes a multipart upload of :data:`BLOCK_SIZE` parts (S3: driven through
  s3fs's client, each block the body of one ``UploadPart``; other stores: the filesystem's file
  opened with ``autocommit=False``), completed when the block completes and aborted when it raises.
  Azure blobs are always committed as a block list, small ones too. A failure uploads nothing that
  becomes visible; there is no temporary object and no copy + delete.

Before writing an S3 object, incomplete multipart uploads a killed writer left under the same key
are aborted (a SIGKILL skips every cleanup). See ``docs/object-storage.md`` for the lifecycle rule
that backs this up.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import uuid
from collections.abc import Iterator
from typing import IO, Any

log = logging.getLogger(__name__)

TEMP_MARKER = ".quamotion-tmp-"
#: Bytes held in memory per object being written: one PUT below it, multipart parts of this size above.
#: 5 MiB is S3's smallest part size (and a multiple of GCS's 256 KiB chunk).
BLOCK_SIZE = 5 * 1024 * 1024
_LOCAL_PROTOCOLS = frozenset({"file", "local"})
#: Azure Blob (adlfs): every object is committed as a block list, small ones too.
_BLOCK_LIST_PROTOCOLS = frozenset({"abfs", "abfss", "az", "adl"})


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
    """A printable URI of a destination (``file://`` for local paths; object paths keep their conn id)."""
    path = to_path(destination)
    return f"file://{os.path.abspath(path)}" if isinstance(path, str) else str(path)


def lineage_of(destination: Any) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)``: ``file`` + absolute path, or the store's own namespace and key.

    ``s3://aws_default@lake/q/runs.jsonl`` -> ``("s3://lake", "q/runs.jsonl")``: the connection id is
    how Airflow reaches the store, not part of the dataset's identity.
    """
    path = to_path(destination)
    local = _local_of(path)
    if local is not None:
        return "file", os.path.abspath(local)
    namespace = getattr(path, "namespace", None)
    key = getattr(path, "key", None)
    if namespace is not None and key is not None:
        # Airflow 3.0's namespace keeps the connection id (s3://aws_default@lake): drop it
        scheme, sep, store = str(namespace).partition("://")
        return f"{scheme}{sep}{store.rpartition('@')[2]}", str(key).lstrip("/")
    from urllib.parse import urlsplit

    parts = urlsplit(str(path))
    return f"{parts.scheme}://{parts.hostname or ''}", parts.path.lstrip("/")


def _local_of(path: Any) -> str | None:
    """The local file system path of ``path`` (a ``str``, or a ``file://`` object storage path)."""
    if isinstance(path, str):
        return path
    if getattr(path, "protocol", None) in _LOCAL_PROTOCOLS:
        return str(getattr(path, "path", None) or os.fspath(path))
    return None


def remove_stale_temporaries(path: Any) -> int:
    """Remove temporary files a killed local writer left beside ``path`` (a SIGKILL skips every cleanup).

    Writing the same destination from two tasks at once is a race whoever wins; this only makes
    sure a rerun after a kill leaves nothing behind. Returns how many were removed.
    """
    local = _local_of(path)
    if local is None:
        return 0
    import glob

    pattern = f".{os.path.basename(local)}{TEMP_MARKER}*"
    removed = 0
    directory = os.path.dirname(os.path.abspath(local))
    with contextlib.suppress(OSError):
        for stale in glob.glob(os.path.join(glob.escape(directory), pattern)):
            os.unlink(stale)
            removed += 1
    return removed


def abort_incomplete_uploads(path: Any) -> int:
    """Abort the incomplete S3 multipart uploads of exactly ``path``'s key; returns how many.

    A writer killed mid-upload leaves its parts stored (and billed) but invisible to every listing.
    Uses ``ListMultipartUploads`` / ``AbortMultipartUpload`` through the s3fs client; on other stores,
    or without the permission (``s3:ListBucketMultipartUploads``), it does nothing and the bucket's
    lifecycle rule (``AbortIncompleteMultipartUpload``) is the backstop. Like two writers of one local
    file, two tasks writing one key at once race: the second aborts the first's upload.
    """
    fs = getattr(path, "fs", None)
    call = getattr(fs, "call_s3", None)
    if call is None or getattr(path, "protocol", None) not in ("s3", "s3a"):
        return 0
    bucket, key = str(path.bucket), str(path.key).lstrip("/")
    aborted = 0
    try:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
        while True:
            page = call("list_multipart_uploads", **kwargs)
            for upload in page.get("Uploads", []) or []:
                if upload.get("Key") == key:
                    call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload["UploadId"])
                    aborted += 1
            if not page.get("IsTruncated"):
                break
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker")
    except Exception as error:
        log.warning(
            "Could not look for incomplete multipart uploads of s3://%s/%s (%s); the bucket's lifecycle "
            "rule is what removes those a killed writer left.",
            bucket,
            key,
            error,
        )
    if aborted:
        log.info(
            "Aborted %d incomplete multipart upload(s) a killed writer left at s3://%s/%s",
            aborted,
            bucket,
            key,
        )
    return aborted


class _PartBody(io.RawIOBase):
    """A part as a seekable stream over the block itself: the HTTP client reads it in small chunks
    (a ``bytes`` body would be copied whole into the socket's send buffer; ``BytesIO`` would copy it)."""

    def __init__(self, data: memoryview) -> None:
        super().__init__()
        self._view = data
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), len(self._view) - self._at))
        buffer[:n] = self._view[self._at : self._at + n]
        self._at += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._view)}[whence]
        self._at = max(0, base + offset)
        return self._at

    def tell(self) -> int:
        return self._at

    def __len__(self) -> int:
        return len(self._view)


class _S3Upload:
    """An S3 multipart upload driven through s3fs's client: one request per part, no copy of a part."""

    def __init__(self, fs: Any, path: str) -> None:
        self._call = fs.call_s3
        bucket, key, _ = fs.split_path(path)
        self._where = {"Bucket": bucket, "Key": key}
        self._id = str(self._call("create_multipart_upload", **self._where)["UploadId"])
        self._parts: list[dict[str, Any]] = []

    def send(self, part: memoryview) -> None:
        number = len(self._parts) + 1
        body = _PartBody(part)
        out = self._call("upload_part", **self._where, UploadId=self._id, PartNumber=number, Body=body)
        sent = {"PartNumber": number, "ETag": out["ETag"]}
        sent.update({k: v for k, v in out.items() if k.startswith("Checksum") and k != "ChecksumType"})
        self._parts.append(sent)

    def commit(self) -> None:
        parts = {"Parts": self._parts}
        self._call("complete_multipart_upload", **self._where, UploadId=self._id, MultipartUpload=parts)

    def discard(self) -> None:
        self._call("abort_multipart_upload", **self._where, UploadId=self._id)


class _FsspecUpload:
    """Any other store: the filesystem's own file opened with ``autocommit=False`` (Azure: staged blocks
    and one block list commit), fed whole blocks so that each flush sends exactly one."""

    def __init__(self, fs: Any, path: str, block_size: int) -> None:
        self._file = fs.open(path, "wb", autocommit=False, block_size=block_size)

    def send(self, part: memoryview) -> None:
        self._file.write(part)

    def commit(self) -> None:
        self._file.close()
        self._file.commit()

    def discard(self) -> None:
        try:
            self._file.discard()
        finally:
            self._file.closed = True  # never flush the rest on garbage collection


class ObjectWriter(io.RawIOBase):
    """A write-only binary stream into one object, visible only after :meth:`commit`.

    Holds up to ``block_size`` bytes; if the object stays that small, :meth:`commit` sends it with one
    PUT (``pipe_file``). Beyond that each full block is sent as one part of a multipart upload (S3:
    its own ``CreateMultipartUpload`` / ``UploadPart`` calls through s3fs's client, the block itself
    the request body; other stores: the filesystem's file opened with ``autocommit=False``);
    :meth:`commit` completes that upload, :meth:`discard` aborts it. Memory: one block, plus what the
    store's client holds while a part is in flight.

    :param fs: the fsspec filesystem of the store.
    :param path: the object's path in ``fs``.
    :param block_size: bytes held in memory, and the size of each part or block.
    :param single_put: send a small object with one PUT; ``False`` stages it as a block and commits
        the block list (Azure: a commit drops the blocks a killed writer staged, a Put Blob keeps them).
    """

    def __init__(self, fs: Any, path: str, block_size: int = BLOCK_SIZE, *, single_put: bool = True) -> None:
        super().__init__()
        self._single_put = single_put
        self._fs = fs
        self._path = path
        self._block_size = block_size
        # one block, allocated whole (a growing bytearray would copy itself as it grows), and its fill
        self._buffer: bytearray | None = None
        self._fill = 0
        self._upload: _S3Upload | _FsspecUpload | None = None
        self._position = 0
        self._done = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self._done:
            raise ValueError("write to a committed or discarded object")
        view = memoryview(data).cast("B")
        size = len(view)
        self._position += size
        while len(view):
            if self._fill >= self._block_size:  # a full block and more to come: send it
                self._send()
            if self._buffer is None:
                self._buffer = bytearray(self._block_size)
            n = min(self._block_size - self._fill, len(view))
            self._buffer[self._fill : self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
        return size

    def _held(self) -> memoryview:
        """The bytes written and not sent yet."""
        return memoryview(self._buffer or b"")[: self._fill]

    def _send(self) -> None:
        if self._upload is None:
            self._upload = self._start()
        part = self._held()
        self._buffer, self._fill = None, 0
        self._upload.send(part)

    def _start(self) -> _S3Upload | _FsspecUpload:
        if callable(getattr(self._fs, "call_s3", None)):
            return _S3Upload(self._fs, self._path)
        return _FsspecUpload(self._fs, self._path, self._block_size)

    def tell(self) -> int:
        return self._position

    def commit(self) -> None:
        """Make the object visible: one PUT, or the multipart upload completed."""
        self._done = True
        if self._upload is None and (self._single_put or not self._fill):
            self._fs.pipe_file(self._path, self._held().tobytes())
            self._buffer, self._fill = None, 0
        else:
            if self._fill:
                self._send()
            assert self._upload is not None
            self._upload.commit()
        with contextlib.suppress(Exception):
            self._fs.invalidate_cache(self._path)
        super().close()

    def discard(self) -> None:
        """Drop what was written: nothing becomes visible; a multipart upload is aborted."""
        self._done = True
        self._buffer, self._fill = None, 0
        if self._upload is not None:
            upload, self._upload = self._upload, None
            upload.discard()
        super().close()

    def close(self) -> None:
        if not self._done:
            self.discard()
        super().close()


@contextlib.contextmanager
def atomic_writer(destination: Any, mode: str = "wb", *, block_size: int = BLOCK_SIZE) -> Iterator[IO[Any]]:
    """Open ``destination`` for writing; it appears (or is replaced) only when the block succeeds.

    :param destination: a local path, a URI (``s3://...``, ``file://...``) or an ``ObjectStoragePath``.
    :param mode: ``"wb"`` or ``"w"`` (UTF-8).
    :param block_size: bytes held in memory for an object store (one PUT below it, parts above).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_writer mode must be 'wb' or 'w', not {mode!r}")
    path = to_path(destination)
    local = _local_of(path)
    if local is not None:
        with _local_writer(local, mode) as handle:
            yield handle
        return
    abort_incomplete_uploads(path)
    single_put = getattr(path, "protocol", None) not in _BLOCK_LIST_PROTOCOLS
    writer = ObjectWriter(path.fs, str(path.path), block_size, single_put=single_put)
    try:
        if mode == "w":
            text = io.TextIOWrapper(writer, encoding="utf-8", newline="", write_through=True)  # type: ignore[type-var]
            yield text
            text.flush()
            text.detach()
        else:
            yield writer  # type: ignore[misc]
        writer.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            writer.discard()
        raise


@contextlib.contextmanager
def _local_writer(path: str, mode: str) -> Iterator[IO[Any]]:
    remove_stale_temporaries(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temp = os.path.join(directory, f".{os.path.basename(path)}{TEMP_MARKER}{uuid.uuid4().hex}")
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
