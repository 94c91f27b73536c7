from __future__ import annotations

import json

import pyarrow as pa
import pytest

from cormorant.lake import MANIFEST, Lake, PartitionNotFound

SCHEMA = pa.schema([("id", pa.int64()), ("value", pa.float64())])


def _batches(n: int, start: int = 0, size: int = 10):
    for offset in range(start, start + n, size):
        ids = list(range(offset, min(offset + size, start + n)))
        yield pa.RecordBatch.from_pydict({"id": ids, "value": [i / 2 for i in ids]}, schema=SCHEMA)


def test_partition_key_is_dataset_and_date(lake):
    assert lake.partition_key("churn/raw", "2024-03-01") == "churn/raw/ds=2024-03-01"
    assert lake.uri("churn/raw/ds=2024-03-01").endswith("/lake/churn/raw/ds=2024-03-01")


def test_commit_writes_data_then_manifest_with_counts_and_hash(lake, tmp_path):
    manifest = lake.write_partition(
        "d",
        "2024-03-01",
        _batches(25),
        schema=SCHEMA,
        partition_column="id",
        source={"query": "SELECT 1"},
        lineage={"run_id": "r1"},
    )
    assert manifest.row_count == 25
    assert (manifest.partition_min, manifest.partition_max) == ("0", "24")
    assert manifest.schema == [{"name": "id", "type": "int64"}, {"name": "value", "type": "double"}]
    on_disk = json.loads((tmp_path / "lake" / "d" / "ds=2024-03-01" / MANIFEST).read_text())
    assert on_disk["content_hash"] == manifest.content_hash
    assert on_disk["lineage"] == {"run_id": "r1"}
    assert lake.read("d", "2024-03-01").column("id").to_pylist() == list(range(25))
    assert lake.partitions("d") == ["2024-03-01"]


def test_rerun_replaces_partition_exactly(lake, tmp_path):
    first = lake.write_partition("d", "2024-03-01", _batches(25), schema=SCHEMA)
    second = lake.write_partition("d", "2024-03-01", _batches(25), schema=SCHEMA)
    assert second.content_hash == first.content_hash
    attempts = [
        p.name for p in (tmp_path / "lake" / "d" / "ds=2024-03-01").iterdir() if p.name.startswith("run=")
    ]
    assert len(attempts) == 1
    third = lake.write_partition("d", "2024-03-01", _batches(5, start=100), schema=SCHEMA)
    assert third.row_count == 5
    assert lake.read("d", "2024-03-01").column("id").to_pylist() == list(range(100, 105))


def test_failed_write_leaves_previous_commit_visible(lake):
    lake.write_partition("d", "2024-03-01", _batches(25), schema=SCHEMA)

    def broken():
        yield from _batches(10)
        raise ConnectionError("warehouse went away")

    with pytest.raises(ConnectionError):
        lake.write_partition("d", "2024-03-01", broken(), schema=SCHEMA)
    assert lake.read("d", "2024-03-01").num_rows == 25
    assert lake.require("d", "2024-03-01").row_count == 25


def test_uncommitted_partition_is_invisible(lake):
    def broken():
        yield from _batches(10)
        raise ConnectionError("killed")

    with pytest.raises(ConnectionError):
        lake.write_partition("d", "2024-03-02", broken(), schema=SCHEMA)
    assert lake.partitions("d") == []
    with pytest.raises(PartitionNotFound, match="d/ds=2024-03-02 is not committed"):
        lake.read("d", "2024-03-02")


def test_batch_with_other_schema_is_refused(lake):
    other = pa.RecordBatch.from_pydict({"id": ["a"], "value": [1.0]})
    with pytest.raises(TypeError, match="schema"):
        lake.write_partition("d", "2024-03-01", iter([other]), schema=SCHEMA)
    assert lake.partitions("d") == []


def test_iter_batches_streams_the_committed_rows(lake):
    lake.write_partition("d", "2024-03-01", _batches(25), schema=SCHEMA)
    sizes = [b.num_rows for b in lake.iter_batches("d", "2024-03-01", batch_size=10)]
    assert sum(sizes) == 25
    assert max(sizes) <= 10


def test_an_opened_partition_reads_its_own_commit_column_by_column(lake):
    lake.write_partition("d", "2024-03-01", _batches(25), schema=SCHEMA)
    with lake.opened("d", "2024-03-01") as part:
        lake.write_partition("d", "2024-03-01", _batches(7, start=100), schema=SCHEMA)  # a re-run lands
        assert (part.num_rows, part.column_names, part.manifest.row_count) == (25, ["id", "value"], 25)
        assert part.read(["value"]).column_names == ["value"]
        assert part.read(["id"]).column("id").to_pylist() == list(range(25))
    assert lake.read("d", "2024-03-01").column("id").to_pylist() == list(range(100, 107))


def test_json_documents_are_written_atomically_and_read_back(lake):
    uri = lake.write_json("r/x.json", {"a": 1})
    assert uri.endswith("r/x.json")
    assert lake.read_json("r/x.json") == {"a": 1}
    assert lake.read_json("r/missing.json") is None


def test_lake_accepts_a_file_uri(tmp_path):
    lake = Lake((tmp_path / "l").as_uri())
    lake.write_partition("d", "2024-03-01", _batches(3), schema=SCHEMA)
    assert lake.partitions("d") == ["2024-03-01"]


def test_schema_defaults_to_the_first_batch_and_an_empty_stream_is_refused(lake):
    manifest = lake.write_partition("d", "2024-03-01", _batches(12))
    assert manifest.schema == [{"name": "id", "type": "int64"}, {"name": "value", "type": "double"}]
    with pytest.raises(ValueError, match="no batches to take a schema from"):
        lake.write_partition("d", "2024-03-02", iter([]))
    assert lake.partitions("d") == ["2024-03-01"]


def test_streaming_a_partition_holds_one_row_group_not_the_file(lake):
    """Drift and inference stream partitions of any size: the reader must not pre-buffer every row
    group of the file before the first batch (pyarrow does when asked for the whole file). Measured in
    a fresh process: its peak resident memory while streaming, above what it held before."""
    import subprocess
    import sys

    import numpy as np

    rows, group, columns = 1_000_000, 131_072, 30
    table = pa.table({f"x{i}": np.random.default_rng(i).random(rows) for i in range(columns)})  # 240 MB
    lake.write_partition("t/raw", "2024-03-01", table.to_batches(group), row_group_rows=group)
    del table
    code = f"""
from cormorant.lake import Lake
def peak():
    return [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")][0] / 1024
lake = Lake({str(lake.root)!r})
before = peak()
for _ in lake.iter_batches("t/raw", "2024-03-01", batch_size=65_536):
    pass
print(peak() - before)
"""
    grown = float(
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    )
    assert grown < 200, f"{grown:.0f} MB more held while streaming a 240 MB partition (whole file: ~300)"


def test_processes_that_read_the_lake_exit_cleanly(lake):
    """pyarrow's dataset reader (``pq.read_table``) dropped its last hold on the Python file it read
    on one of its own threads, sometimes after the call returned; at interpreter exit that thread then
    asked for the GIL and the process aborted ("terminate called without an active exception", signal
    6) after its work was done: a reader in CI, and about one task process in ten that read the lake.
    Many short processes, each reading every way the lake offers and exiting at once."""
    import subprocess
    import sys

    lake.write_partition("t/raw", "2024-03-01", _batches(100_000, size=10_000))
    code = f"""
from cormorant.lake import Lake
lake = Lake({str(lake.root)!r})
sum(b.num_rows for b in lake.iter_batches("t/raw", "2024-03-01"))
with lake.opened("t/raw", "2024-03-01") as part:
    part.read(["id"])
lake.read_many("t/raw", ["2024-03-01"], columns=["value"])
lake.read("t/raw", "2024-03-01")
"""  # the exit follows a read at once: the moment the abort needs
    failures, running = [], []
    for _ in range(20):
        if len(running) == 2:
            failures.append(_finished(running.pop(0)))
        running.append(subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True))
    failures += [_finished(p) for p in running]
    failures = [f for f in failures if f]
    assert failures == [], f"{len(failures)} of 20 processes did not exit cleanly: {failures[:3]}"


def _finished(process) -> str | None:
    _, err = process.communicate(timeout=120)
    return None if process.returncode == 0 else f"exit {process.returncode}: {err.strip()[-300:]}"


def test_reading_the_lake_leaves_no_python_buffers_on_pyarrow_threads(lake):
    """A validation benchmark's worker aborted at exit after its work was done (signal 6, "terminate
    called without an active exception"): its core dump had one of pyarrow's decoding threads freeing
    a buffer that held a Python object (a read from the lake's Python file object) while Python
    finalized. Every way of reading the lake, on several columns (which pyarrow decoded on its own
    threads, and pre-buffered on its I/O threads), now calls the lake's files from the reading thread
    only, and reads the same rows."""
    from support import python_file_calls

    lake.write_partition("t/raw", "2024-03-01", _batches(50_000, size=5_000))
    with python_file_calls() as calls:
        whole = lake.read("t/raw", "2024-03-01")
        streamed = sum(b.num_rows for b in lake.iter_batches("t/raw", "2024-03-01"))
        with lake.opened("t/raw", "2024-03-01") as part:
            opened = part.read(["id", "value"])
        many = lake.read_many("t/raw", ["2024-03-01"], columns=["id", "value"])
    assert calls, "no Python file was read: the test no longer covers the lake's reads"
    assert all(on_main for _, on_main in calls), [c for c in calls if not c[1]][:5]
    assert whole.num_rows == streamed == opened.num_rows == many.num_rows == 50_000
    assert whole.column("value").to_pylist()[:3] == [0.0, 0.5, 1.0]


def test_writing_a_partition_of_timestamps_does_not_import_pandas(tmp_path):
    """An extraction's process has no use for pandas, but pyarrow's ``as_py`` imports it for any
    timestamp (about 0.2-0.3 s and 40 MB): the partition's bounds are taken without it. The batches come
    from Arrow's CSV reader, as a COPY stream's do (building them from Python values imports pandas)."""
    import subprocess
    import sys

    code = f"""
import io, sys
import pyarrow as pa, pyarrow.csv as csv
from cormorant.lake import Lake
text = b"2024-03-01 23:59:59.5+00,1\\n2024-03-01 00:00:00+00,2\\n"
types = {{"event_ts": pa.timestamp("us", tz="UTC"), "n": pa.int64()}}
table = csv.read_csv(io.BytesIO(text), read_options=csv.ReadOptions(column_names=list(types)),
                     convert_options=csv.ConvertOptions(column_types=types))
lake = Lake({str(tmp_path / "lake")!r})
m = lake.write_partition("d", "2024-03-01", table.to_batches(), partition_column="event_ts")
print(m.partition_min, "|", m.partition_max, "|", "pandas" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    lo, hi, pandas = (part.strip() for part in done.stdout.strip().splitlines()[-1].split("|"))
    assert (lo, hi) == ("2024-03-01 00:00:00+00:00", "2024-03-01 23:59:59.500000+00:00")
    assert pandas == "False"


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
@pytest.mark.parametrize("tz", [None, "UTC", "America/New_York", "+05:30", "-03:00"])
def test_a_partitions_timestamp_bounds_are_what_pyarrow_would_give(unit, tz, lake):
    """The bounds taken without pandas (above) equal ``as_py``'s, before the epoch and across a time
    change included, and read the same in the manifest."""
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000}[unit]
    seconds = [-86_401, 0, 1_710_054_000, 1_710_054_000 + 3_600]  # 2024-03-10 07:00 UTC: DST in New York
    column = pa.array([s * per_second for s in seconds], pa.int64()).cast(pa.timestamp(unit, tz=tz))
    table = pa.table({"ts": column})

    manifest = lake.write_partition("d", "2024-03-01", table.to_batches(), partition_column="ts")

    assert (manifest.partition_min, manifest.partition_max) == (
        str(column[0].as_py()),
        str(column[-1].as_py()),
    )
