"""The Parquet lake: one committed partition per dataset and date, on a local folder or S3.

Layout under the lake root::

    <dataset>/ds=<YYYY-MM-DD>/run=<attempt>/part-00000.parquet   data of one write attempt
    <dataset>/ds=<YYYY-MM-DD>/_manifest.json                     the commit: written last

A write streams record batches into a new ``run=`` folder, then commits by writing the manifest in
one step (a rename on a local folder, a single PUT on S3): the last commit wins. Readers go through
the manifest only, so they never see a partial partition, and a re-run replaces the partition exactly.

Several writers of one partition may overlap (a retry beside another run, a backfill beside a nightly
run), so cleanup never removes what a commit or a live writer still uses. An attempt is marked
``_done`` once its fate is sealed (committed, or failed); after committing, a writer removes only
attempts that are done (or stale: older than ``stale_after``, a killed writer's) and that the
manifest, read again *after* seeing their marker, does not reference. A done attempt can no longer
commit, so a manifest read after its marker is the final word on it. A reader whose files were
replaced by a newer commit between reading the manifest and opening them reads the new commit.

Paths are ``UPath`` objects; Airflow's ``ObjectStoragePath`` is one, so operators pass theirs in and
the library stays free of Airflow.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from cormorant.errors import CormorantError

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
ATTEMPT_PREFIX = "run="
DONE_MARKER = "_done"
ATTEMPT_TIME = "%Y%m%dT%H%M%SZ"
# An attempt that never said it was done (its writer was killed) is removed after this long; it must
# exceed the longest a task may run, so a live writer is never taken for a dead one.
STALE_AFTER = timedelta(hours=24)
LOCAL_PROTOCOLS = ("", "file", "local")
READ_RETRIES = 3
T = TypeVar("T")


class PartitionNotFound(CormorantError, LookupError):
    """No committed partition exists for a dataset and date (yet: its ingest may still land it)."""

    retryable = True


class PartitionReplaced(CormorantError):
    """A newer commit of the partition removed the files a stream was reading (a re-run of the day, on
    S3): what was streamed is a part of the old commit, so it is dropped, and a retry reads the new."""

    retryable = True


@dataclass(frozen=True)
class Manifest:
    """What a committed partition holds; written last, read first."""

    dataset: str
    partition: str
    row_count: int
    schema: list[dict[str, str]]
    files: list[dict[str, Any]]
    content_hash: str
    partition_column: str | None = None
    partition_min: str | None = None
    partition_max: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    format_version: int = 1

    @property
    def attempts(self) -> set[str]:
        """The ``run=`` folders this commit's files live in."""
        return {f["path"].split("/", 1)[0] for f in self.files}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return cls(**json.loads(text))


class _HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through it."""

    def __init__(self, raw: Any):
        self.raw, self.sha, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()

    @property
    def closed(self) -> bool:
        return self.raw.closed

    def tell(self) -> int:
        return self.size

    def close(self) -> None:  # the owner closes the raw file
        pass


def is_local(path: UPath) -> bool:
    return getattr(path, "protocol", "") in LOCAL_PROTOCOLS


def new_attempt_name(now: datetime | None = None) -> str:
    """``run=<UTC start time>-<random>``: unique, and its age is readable from its name alone."""
    return f"{ATTEMPT_PREFIX}{(now or datetime.now(UTC)).strftime(ATTEMPT_TIME)}-{uuid.uuid4().hex[:12]}"


def attempt_started(name: str) -> datetime | None:
    """When an attempt started, from its name (None for a name without a time)."""
    stamp = name.removeprefix(ATTEMPT_PREFIX).split("-", 1)[0]
    try:
        return datetime.strptime(stamp, ATTEMPT_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def _fresh_listing(path: UPath) -> list[UPath]:
    """The children of ``path`` as they are now (object stores cache listings per process)."""
    invalidate = getattr(path.fs, "invalidate_cache", None)
    if invalidate is not None:
        invalidate(path.path)
    try:
        return list(path.iterdir())
    except FileNotFoundError:
        return []


def _read_text_or_none(path: UPath) -> str | None:
    """The file's text, or None if it does not exist: one read, no cached existence check.

    Manifests and reports are replaced in place by later commits. On an object store the read is a
    single GET (s3fs's file objects check the ETag between requests, and fail with ``FileExpired``
    when a writer replaced the object in between); a replacement caught anyway is read again.
    """
    for attempt in range(READ_RETRIES):
        try:
            if is_local(path):
                return Path(path.path).read_text()
            return path.fs.cat_file(path.path).decode()
        except FileNotFoundError:
            return None
        except OSError as e:
            if type(e).__name__ != "FileExpired" or attempt == READ_RETRIES - 1:
                raise
    return None


def write_bytes_atomic(path: UPath, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step: rename on a local disk, a single PUT on object stores."""
    if is_local(path):
        local = Path(path.path)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, local)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _remove_tree(path: UPath) -> None:
    path.fs.rm(path.path, recursive=True)


def _minmax(table: pa.Table, column: str | None) -> tuple[Any, Any]:
    """The column's min and max as Python values (compared natively, not as text)."""
    import pyarrow.compute as pc

    if column is None or column not in table.column_names or table.num_rows == 0:
        return None, None
    result = pc.min_max(table[column])
    return _python_value(result["min"]), _python_value(result["max"])


_EPOCH = datetime(1970, 1, 1)
_MICROSECONDS = {"s": 1_000_000, "ms": 1_000, "us": 1}


def _python_value(scalar: pa.Scalar) -> Any:
    """``scalar.as_py()``, but a timestamp of seconds to microseconds is built here: pyarrow's ``as_py``
    imports pandas for any timestamp (about 0.2-0.3 s and 40 MB in a process that has none, as an
    extraction's need not), and gives the same ``datetime`` (aware where the type has a time zone, with
    the ``tzinfo`` pyarrow's own ``string_to_tzinfo`` gives ``as_py``). Nanoseconds stay with ``as_py``
    (a ``pandas.Timestamp``, which keeps them)."""
    if not (pa.types.is_timestamp(scalar.type) and scalar.type.unit in _MICROSECONDS and scalar.is_valid):
        return scalar.as_py()
    value = _EPOCH + timedelta(microseconds=scalar.value * _MICROSECONDS[scalar.type.unit])
    tz = scalar.type.tz
    return value if not tz else value.replace(tzinfo=UTC).astimezone(pa.lib.string_to_tzinfo(tz))


def _widen(lo: Any, hi: Any, table: pa.Table, column: str | None) -> tuple[Any, Any]:
    """The running (min, max) of ``column`` widened by ``table``."""
    tlo, thi = _minmax(table, column)
    lo = tlo if lo is None or (tlo is not None and tlo < lo) else lo
    hi = thi if hi is None or (thi is not None and thi > hi) else hi
    return lo, hi


def _read_parquet(source: Any, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file, read on this thread (:func:`_parquet_file`). Not ``pq.read_table``: its
    dataset reader reads on pyarrow's threads too."""
    return _parquet_file(source).read(columns=columns, use_threads=False)


def _parquet_file(source: Any) -> pq.ParquetFile:
    """A lake file (a Python file object, or bytes) as a Parquet file that pyarrow reads on the calling
    thread only: no pre-buffering (column chunks fetched ahead on pyarrow's I/O threads), and every
    read here passes ``use_threads=False`` (no decoding on its CPU threads).

    Each read of a Python file comes back as a buffer holding a Python object. A pyarrow thread that
    holds such a buffer, and drops the last hold after the read returned, needs the GIL to free it;
    if the process is exiting by then, the thread is stopped where it stands and the process aborts
    after its work is done ("terminate called without an active exception", signal 6). Seen in a
    benchmark worker that exited right after reading: its core dump had a Parquet column decoder
    freeing a Python buffer on a pyarrow thread while Python finalized (``pq.read_table`` did the same
    before it). What it costs, measured: docs/benchmarks.md (validation)."""
    return pq.ParquetFile(source, pre_buffer=False)


class OpenPartition:
    """The files of one committed partition, open: its columns read on demand (:meth:`Lake.opened`)."""

    def __init__(self, manifest: Manifest, files: list[pq.ParquetFile]):
        self.manifest = manifest
        self.files = files  # a commit has at least one (an empty day's holds its schema)
        self.schema: pa.Schema = files[0].schema_arrow
        self.num_rows = sum(f.metadata.num_rows for f in files)

    @property
    def column_names(self) -> list[str]:
        return list(self.schema.names)

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """These columns (default: all) of every row."""
        return pa.concat_tables([f.read(columns=columns, use_threads=False) for f in self.files])

    def iter_batches(
        self, *, batch_size: int = 65_536, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        for parquet in self.files:
            # One row group at a time, on this thread (_parquet_file): memory stays one group.
            for group in range(parquet.num_row_groups):
                yield from parquet.iter_batches(
                    batch_size=batch_size, row_groups=[group], columns=columns, use_threads=False
                )


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, infinity) as None: JSON has no NaN, and a bare ``NaN``
    token makes the document unreadable to strict parsers (browsers, jq, most languages)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "shape", None) == ():
        return strict_json(obj.item())  # a numpy scalar
    return obj


class Lake:
    """A lake rooted at a local folder, ``file://`` URI or ``s3://`` URI (or an ObjectStoragePath)."""

    def __init__(self, root: UPath | str):
        self.root = root if isinstance(root, UPath) else UPath(root)

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    # -- addressing -------------------------------------------------------------------------------
    def path(self, key: str) -> UPath:
        return self.root.joinpath(*key.split("/"))

    def uri(self, key: str) -> str:
        return str(self.path(key))

    def partition_key(self, dataset: str, partition: str) -> str:
        return f"{dataset}/ds={partition}"

    # -- writing -------------------------------------------------------------------------------------
    def write_partition(
        self,
        dataset: str,
        partition: str,
        batches: Iterable[pa.RecordBatch],
        *,
        schema: pa.Schema | None = None,
        partition_column: str | None = None,
        source: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None,
        progress_every_rows: int = 1_000_000,
        row_group_rows: int = 131_072,
    ) -> Manifest:
        """Stream ``batches`` into one Parquet file and commit the partition atomically.

        Every batch must match ``schema`` (default: the first batch's; then the stream may not be
        empty). If anything fails before the manifest is written, the previous commit (if any) stays
        exactly as it was.
        """
        if schema is None:
            stream = iter(batches)
            first = next(stream, None)
            if first is None:
                raise ValueError(f"lake {dataset}/{partition}: no batches to take a schema from")
            schema, batches = first.schema, itertools.chain([first], stream)
        attempt, folder = self.new_attempt(dataset, partition)
        with self._abandoned_on_failure(folder):
            data_path = folder / "part-00000.parquet"
            rows, lo, hi = 0, None, None
            next_report = progress_every_rows
            pending: list[pa.RecordBatch] = []
            pending_rows = 0

            def flush(writer: pq.ParquetWriter) -> None:
                nonlocal rows, lo, hi, pending_rows, next_report
                table = pa.Table.from_batches(pending, schema=schema)
                writer.write_table(table, row_group_size=max(pending_rows, 1))
                rows += table.num_rows
                lo, hi = _widen(lo, hi, table, partition_column)
                pending.clear()
                pending_rows = 0
                if rows >= next_report:
                    log.info("lake %s/%s: %d rows, %d bytes written", dataset, partition, rows, sink.size)
                    next_report += progress_every_rows

            # Dictionary encoding pays off for strings (categories); for numbers and timestamps it costs
            # time and rarely space.
            dictionary = [
                f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            ]
            with data_path.open("wb") as raw:
                sink = _HashingWriter(raw)
                with pq.ParquetWriter(sink, schema, compression="zstd", use_dictionary=dictionary) as writer:
                    for batch in batches:
                        if not batch.schema.equals(schema):
                            raise TypeError(
                                f"lake {dataset}/{partition}: a batch's schema {batch.schema} "
                                f"differs from {schema}"
                            )
                        pending.append(batch)
                        pending_rows += batch.num_rows
                        if pending_rows >= row_group_rows:
                            flush(writer)
                    if pending or rows == 0:
                        flush(writer)
            files = [
                {
                    "path": f"{attempt}/part-00000.parquet",
                    "rows": rows,
                    "bytes": sink.size,
                    "sha256": sink.sha.hexdigest(),
                }
            ]
            return self._commit(
                dataset, partition, attempt, schema, files, (lo, hi), partition_column, source, lineage
            )

    def _commit(
        self,
        dataset: str,
        partition: str,
        attempt: str,
        schema: pa.Schema,
        files: list[dict[str, Any]],
        bounds: tuple[Any, Any],
        partition_column: str | None,
        source: dict[str, Any] | None,
        lineage: dict[str, Any] | None,
    ) -> Manifest:
        """Write the manifest (the commit), mark the attempt done, then remove attempts nobody uses."""
        key = self.partition_key(dataset, partition)
        lo, hi = bounds
        manifest = Manifest(
            dataset=dataset,
            partition=partition,
            row_count=sum(f["rows"] for f in files),
            schema=[{"name": f.name, "type": str(f.type)} for f in schema],
            files=files,
            content_hash=hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest(),
            partition_column=partition_column,
            partition_min=None if lo is None else str(lo),
            partition_max=None if hi is None else str(hi),
            source=source or {},
            lineage=lineage or {},
        )
        write_bytes_atomic(self.path(f"{key}/{MANIFEST}"), manifest.to_json().encode())
        try:  # committed: nothing after this point may fail the write
            self._mark_done(self.path(f"{key}/{attempt}"), "committed")
            self.remove_unused_attempts(dataset, partition)
        except Exception:
            log.warning("lake %s/%s: cleanup after the commit failed", dataset, partition, exc_info=True)
        log.info(
            "lake %s/%s committed: %d rows, content %s",
            dataset,
            partition,
            manifest.row_count,
            manifest.content_hash[:12],
        )
        return manifest

    def new_attempt(self, dataset: str, partition: str) -> tuple[str, UPath]:
        """A fresh attempt folder (also for a writer outside this class: Redshift UNLOAD, say)."""
        attempt = new_attempt_name()
        folder = self.path(f"{self.partition_key(dataset, partition)}/{attempt}")
        folder.mkdir(parents=True, exist_ok=True)
        return attempt, folder

    @staticmethod
    def _mark_done(folder: UPath, fate: str) -> None:
        write_bytes_atomic(folder / DONE_MARKER, fate.encode())

    @contextlib.contextmanager
    def _abandoned_on_failure(self, folder: UPath) -> Iterator[None]:
        """Abandon the attempt in ``folder`` if the block fails (the previous commit stays)."""
        try:
            yield
        except BaseException:
            self.abandon(folder)
            raise

    def abandon(self, folder: UPath) -> None:
        """A failed attempt: say it is done, then remove it unless a commit uses it (best effort;
        a later cleanup retries)."""
        try:
            self._mark_done(folder, "abandoned")
            text = _read_text_or_none(folder.parent / MANIFEST)
            if text is None or folder.name not in Manifest.from_json(text).attempts:
                _remove_tree(folder)
        except Exception:  # the write's own error is the one to report
            log.warning("lake: could not remove the failed attempt %s", folder, exc_info=True)

    def commit_files(
        self,
        dataset: str,
        partition: str,
        attempt: str,
        *,
        partition_column: str | None = None,
        source: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None,
    ) -> Manifest:
        """Commit Parquet files that another writer put in ``attempt``: the manifest is written last.
        On failure the attempt is abandoned (the previous commit stays)."""
        folder = self.path(f"{self.partition_key(dataset, partition)}/{attempt}")
        with self._abandoned_on_failure(folder):
            files, schema, rows, lo, hi = [], None, 0, None, None
            for path in sorted(_fresh_listing(folder), key=lambda p: p.name):
                if path.name.startswith((".", "_")):
                    continue
                data = path.read_bytes()
                table = _read_parquet(pa.BufferReader(data))
                if schema is not None and not table.schema.equals(schema):
                    raise TypeError(
                        f"lake {dataset}/{partition}: {path.name} has schema {table.schema}, not {schema}"
                    )
                schema = table.schema
                lo, hi = _widen(lo, hi, table, partition_column)
                rows += table.num_rows
                files.append(
                    {
                        "path": f"{attempt}/{path.name}",
                        "rows": table.num_rows,
                        "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                    }
                )
            if schema is None:
                raise FileNotFoundError(f"lake {dataset}/{partition}: no data files in {folder}")
            return self._commit(
                dataset, partition, attempt, schema, files, (lo, hi), partition_column, source, lineage
            )

    def remove_unused_attempts(
        self, dataset: str, partition: str, *, stale_after: timedelta = STALE_AFTER
    ) -> list[str]:
        """Remove the partition's attempts that are done (or stale) and not in the current commit.

        Safe beside live writers and other cleanups: an attempt still writing has no done marker
        and is younger than ``stale_after``; the manifest is read after the markers, so an attempt
        that committed in between is seen as referenced. Returns the removed attempts' names.
        """
        key = self.partition_key(dataset, partition)
        now = datetime.now(UTC)
        candidates = []
        for child in _fresh_listing(self.path(key)):
            if not child.name.startswith(ATTEMPT_PREFIX):
                continue
            started = attempt_started(child.name)
            stale = started is not None and now - started > stale_after
            if stale or _read_text_or_none(child / DONE_MARKER) is not None:
                candidates.append(child)
        if not candidates:
            return []
        text = _read_text_or_none(self.path(f"{key}/{MANIFEST}"))
        in_use = Manifest.from_json(text).attempts if text else set()
        removed = []
        for child in candidates:
            if child.name in in_use:
                continue
            try:
                _remove_tree(child)
                removed.append(child.name)
            except FileNotFoundError:  # another writer's cleanup got there first
                pass
        return removed

    @contextlib.contextmanager
    def exclusive(
        self, key: str, *, timeout_s: float = 900.0, stale_after_s: float = 3600.0, poll_s: float = 0.2
    ) -> Iterator[None]:
        """Hold the lake-wide lock ``key`` (one holder at a time, across processes and machines).

        On a local or mounted lake it is an ``flock`` on the file ``key``, released by the kernel when
        its holder dies. On an object store it is an object created only if absent (a conditional put,
        S3's ``If-None-Match: *``), removed on release; one left by a holder that died is broken after
        ``stale_after_s``. Waits up to ``timeout_s``, then raises :class:`TimeoutError` naming the key.
        """
        import time

        path = self.path(key)
        deadline = time.monotonic() + timeout_s

        def wait(holder: str) -> None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"lock {self.uri(key)} still held after {timeout_s:.0f}s (by {holder})")
            time.sleep(poll_s)

        if self.root.protocol in ("", "file", "local"):
            import fcntl

            local = Path(path.path)
            local.parent.mkdir(parents=True, exist_ok=True)
            with open(local, "a+") as handle:
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        wait("another process on this lake")
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        fs, target = path.fs, path.path
        mine = json.dumps(
            {"holder": f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex}", "at": time.time()}
        )
        while True:
            try:
                fs.pipe_file(target, mine.encode(), mode="create")
                break
            except FileExistsError:
                pass  # held; or released since (then the next try takes it)
            except OSError as exc:
                if not fs.exists(target):  # a failure other than "held"
                    raise OSError(f"cannot create the lock {self.uri(key)}: {exc}") from exc
            with contextlib.suppress(FileNotFoundError, ValueError):
                held = json.loads(fs.cat_file(target))
                if time.time() - float(held["at"]) > stale_after_s:
                    log.warning("breaking the stale lock %s held by %s", self.uri(key), held["holder"])
                    fs.rm_file(target)
                    continue
                wait(held["holder"])
                continue
            wait("unknown")
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                if fs.cat_file(target).decode() == mine:
                    fs.rm_file(target)

    def write_json(self, key: str, obj: Any) -> str:
        """Write a JSON document atomically; returns its URI."""
        path = self.path(key)
        text = json.dumps(strict_json(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
        write_bytes_atomic(path, text.encode())
        return str(path)

    def write_bytes(self, key: str, data: bytes) -> str:
        path = self.path(key)
        write_bytes_atomic(path, data)
        return str(path)

    # -- reading -------------------------------------------------------------------------------------
    def read_json(self, key: str) -> Any | None:
        text = _read_text_or_none(self.path(key))
        return json.loads(text) if text is not None else None

    def manifest(self, dataset: str, partition: str) -> Manifest | None:
        text = _read_text_or_none(self.path(f"{self.partition_key(dataset, partition)}/{MANIFEST}"))
        return Manifest.from_json(text) if text is not None else None

    def require(self, dataset: str, partition: str) -> Manifest:
        manifest = self.manifest(dataset, partition)
        if manifest is None:
            raise PartitionNotFound(
                f"lake partition {dataset}/ds={partition} is not committed under {self.root} "
                f"(has its ingest run succeeded?)"
            )
        return manifest

    def partitions(self, dataset: str) -> list[str]:
        """Committed partitions of a dataset, sorted."""
        base = self.path(dataset)
        if not base.exists():
            return []
        return sorted(
            child.name.removeprefix("ds=")
            for child in base.iterdir()
            if child.name.startswith("ds=") and (child / MANIFEST).exists()
        )

    def _consistent(self, dataset: str, partition: str, read: Callable[[Manifest], Any]) -> Any:
        """``read(manifest)`` of the current commit; if a newer commit replaced its files meanwhile
        (``FileNotFoundError``), read that one instead."""
        manifest = self.require(dataset, partition)
        for _ in range(READ_RETRIES):
            try:
                return read(manifest)
            except FileNotFoundError:
                newer = self.require(dataset, partition)
                if newer == manifest:
                    raise
                log.info("lake %s/%s: a newer commit landed while reading; reading it", dataset, partition)
                manifest = newer
        return read(manifest)

    def read(self, dataset: str, partition: str, columns: list[str] | None = None) -> pa.Table:
        """Read one committed partition."""
        key = self.partition_key(dataset, partition)

        def read_files(manifest: Manifest) -> pa.Table:
            tables = []
            for entry in manifest.files:
                with self.path(f"{key}/{entry['path']}").open("rb") as f:
                    tables.append(_read_parquet(f, columns))
            return pa.concat_tables(tables)

        return self._consistent(dataset, partition, read_files)

    @contextlib.contextmanager
    def opened(self, dataset: str, partition: str) -> Iterator[OpenPartition]:
        """A committed partition's files held open, to read columns from one commit on demand.

        The files are opened before anything is read, so a commit landing meanwhile cannot pull them
        away on a local disk (an open file survives its removal). On S3 each read is a request of its
        own, and the commit's files may be gone by then: prefer :meth:`with_opened`."""
        with contextlib.ExitStack() as stack:
            yield self._consistent(
                dataset, partition, lambda m: stack.enter_context(self._open_commit(dataset, partition, m))
            )

    def with_opened(self, dataset: str, partition: str, use: Callable[[OpenPartition], T]) -> T:
        """``use(part)`` on the current commit, opened (:meth:`opened`); if a newer commit removed its
        files while ``use`` read them (a re-run of the day, on S3), ``use`` again on the newer commit,
        whole. So ``use`` must write nothing before it returns."""

        def attempt(manifest: Manifest) -> T:
            with self._open_commit(dataset, partition, manifest) as part:
                return use(part)

        return self._consistent(dataset, partition, attempt)

    @contextlib.contextmanager
    def _open_commit(self, dataset: str, partition: str, manifest: Manifest) -> Iterator[OpenPartition]:
        key = self.partition_key(dataset, partition)
        with contextlib.ExitStack() as stack:
            files = [
                stack.enter_context(self.path(f"{key}/{entry['path']}").open("rb"))
                for entry in manifest.files
            ]
            yield OpenPartition(manifest, [_parquet_file(f) for f in files])

    def iter_batches(
        self, dataset: str, partition: str, *, batch_size: int = 65_536, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Stream a committed partition in record batches (bounded memory), from one commit (see
        :meth:`opened`). Raises :class:`PartitionReplaced` if a newer commit removed its files
        meanwhile (the batches already yielded cannot be taken back: the consumer's work is retried)."""
        with self.opened(dataset, partition) as part:
            try:
                yield from part.iter_batches(batch_size=batch_size, columns=columns)
            except FileNotFoundError as e:
                newer = self.manifest(dataset, partition)
                if newer is None or newer == part.manifest:
                    raise
                raise PartitionReplaced(
                    f"lake {dataset}/ds={partition}: its commit "
                    f"({', '.join(sorted(part.manifest.attempts))}) "
                    f"was replaced by {', '.join(sorted(newer.attempts))} while it was read (a re-run of "
                    "the day?); a retry reads the new commit"
                ) from e

    def read_many(
        self, dataset: str, partitions: Iterable[str], columns: list[str] | None = None
    ) -> pa.Table:
        return pa.concat_tables(
            [self.read(dataset, p, columns) for p in partitions], promote_options="default"
        )
