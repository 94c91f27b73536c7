"""Overlapping writers of one partition, as real processes, on a local folder and on S3 (moto's server):
a commit never points at files another writer removed, the last commit wins, and a reader always sees
one complete commit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pytest

from cormorant.lake import Lake

# A writer commits `rows` rows whose `tag` column all carry its tag; it can pause mid-stream until a
# go-file appears, so a test can interleave two writers exactly.
WRITER = textwrap.dedent(
    """
    import json, os, sys, time
    import pyarrow as pa
    from upath import UPath
    from cormorant.lake import Lake

    root, options, tag, rows, commits, pause = sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:7]
    rows, commits = int(rows), int(commits)
    lake = Lake(UPath(root, **options))
    schema = pa.schema([("tag", pa.string()), ("i", pa.int64())])

    def batches(n):
        for start in range(0, rows, 50):
            if pause != "-" and start == 100 and n == 0:
                open(pause + ".paused", "w").close()
                while not os.path.exists(pause + ".go"):
                    time.sleep(0.02)
            size = min(50, rows - start)
            yield pa.RecordBatch.from_pydict(
                {"tag": [f"{tag}-{n}"] * size, "i": list(range(start, start + size))}, schema=schema
            )

    for n in range(commits):
        lake.write_partition("d", "2024-03-01", batches(n), schema=schema)
    """
)

# A reader reads the partition in a loop and reports any read that is not one whole commit.
READER = textwrap.dedent(
    """
    import json, sys, time
    from upath import UPath
    from cormorant.lake import Lake

    root, options, seconds, out = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    lake = Lake(UPath(root, **options))
    reads, problems = 0, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            table = lake.read("d", "2024-03-01")
        except Exception as e:
            problems.append(f"{type(e).__name__}: {e}")
            continue
        tags = set(table.column("tag").to_pylist())
        expected = list(range(table.num_rows))
        if len(tags) != 1 or table.column("i").to_pylist() != expected:
            problems.append(f"mixed or partial read: tags {sorted(tags)}, {table.num_rows} rows")
        reads += 1
    json.dump({"reads": reads, "problems": problems[:10]}, open(out, "w"))
    """
)


@pytest.fixture(params=["local", "s3"])
def lake_root(request, tmp_path):
    """(root URI, UPath storage options, Lake) for a local folder or a fresh bucket on moto."""
    if request.param == "local":
        root = (tmp_path / "lake").as_uri()
        return root, {}, Lake(root)
    from support import new_bucket
    from upath import UPath

    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = new_bucket(endpoint)
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}
    root = f"s3://{bucket}/lake"
    return root, options, Lake(UPath(root, **options))


def _writer(root, options, tag, rows, commits=1, pause="-"):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, root, json.dumps(options), tag, str(rows), str(commits), pause],
        stderr=subprocess.PIPE,
    )


def _wait_for_file(path, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def _attempts(lake):
    key = lake.path(lake.partition_key("d", "2024-03-01"))
    return sorted(p.name for p in key.iterdir() if p.name.startswith("run="))


def test_a_writer_committing_while_another_streams_leaves_a_readable_last_commit(lake_root, tmp_path):
    """The data-loss repro: B commits while A is mid-stream, then A commits. Before the fix B's
    cleanup deleted A's folder and A's manifest pointed at a file that no longer existed."""
    root, options, lake = lake_root
    pause = tmp_path / "a"
    a = _writer(root, options, "A", rows=400, pause=str(pause))
    _wait_for_file(pause.with_suffix(".paused"), a)
    b = _writer(root, options, "B", rows=300)
    assert b.wait(60) == 0, b.stderr.read().decode()
    assert lake.read("d", "2024-03-01").column("tag").to_pylist() == ["B-0"] * 300
    pause.with_suffix(".go").touch()
    assert a.wait(60) == 0, a.stderr.read().decode()

    table = lake.read("d", "2024-03-01")  # the last commit wins, and its files are all there
    assert table.column("tag").to_pylist() == ["A-0"] * 400
    assert table.column("i").to_pylist() == list(range(400))
    manifest = lake.require("d", "2024-03-01")
    assert _attempts(lake) == sorted(manifest.attempts)  # B's superseded attempt was removed


def test_overlapping_writers_and_a_reader_never_see_a_broken_or_mixed_partition(lake_root, tmp_path):
    root, options, lake = lake_root
    writers = [_writer(root, options, tag, rows=150 + 50 * i, commits=4) for i, tag in enumerate("WXY")]
    out = tmp_path / "reader.json"
    _wait_for_file_or_commit(lake)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, root, json.dumps(options), "8", str(out)], stderr=subprocess.PIPE
    )
    for w in writers:
        assert w.wait(120) == 0, w.stderr.read().decode()
    assert reader.wait(60) == 0, reader.stderr.read().decode()
    report = json.loads(out.read_text())
    assert report["problems"] == []
    assert report["reads"] > 0

    manifest = lake.require("d", "2024-03-01")
    table = lake.read("d", "2024-03-01")
    assert table.num_rows == manifest.row_count
    assert {t.split("-")[1] for t in table.column("tag").to_pylist()} == {"3"}  # some writer's last commit
    # Every other attempt was done and unused, so the writers' cleanups removed them all.
    assert _attempts(lake) == sorted(manifest.attempts)


def _wait_for_file_or_commit(lake, timeout=60):
    deadline = time.monotonic() + timeout
    while lake.manifest("d", "2024-03-01") is None:
        assert time.monotonic() < deadline, "no writer committed"
        time.sleep(0.05)


def test_cleanup_keeps_a_live_attempt_and_removes_a_stale_one(tmp_path):
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa

    from cormorant.lake import DONE_MARKER, MANIFEST, new_attempt_name

    lake = Lake(tmp_path / "lake")
    schema = pa.schema([("x", pa.int64())])
    lake.write_partition("d", "2024-03-01", iter([pa.record_batch({"x": [1]}, schema=schema)]))
    key = tmp_path / "lake" / "d" / "ds=2024-03-01"
    live = key / new_attempt_name()  # a writer still streaming: no done marker, young
    killed = key / new_attempt_name(datetime.now(UTC) - timedelta(days=2))  # a writer killed long ago
    for folder in (live, killed):
        folder.mkdir()
        (folder / "part-00000.parquet").write_bytes(b"partial")
    removed = lake.remove_unused_attempts("d", "2024-03-01")
    assert removed == [killed.name]
    assert live.exists()
    committed = lake.require("d", "2024-03-01").attempts
    assert all((key / a / DONE_MARKER).exists() for a in committed)
    assert (key / MANIFEST).exists()


def test_a_failed_write_removes_its_own_attempt(lake):
    import pyarrow as pa

    def broken():
        yield pa.record_batch({"x": [1, 2]})
        raise ConnectionError("warehouse went away")

    with pytest.raises(ConnectionError):
        lake.write_partition("d", "2024-03-01", broken(), schema=pa.schema([("x", pa.int64())]))
    assert _attempts(lake) == []


def test_reading_an_open_partition_that_a_new_commit_replaced_reads_the_new_commit_whole(lake_root):
    """Validation reads an open partition column by column. On a local disk the open files outlive
    their removal; on S3 each column is a new request, so a re-run of the day that commits (and removes
    the old attempt's files) between two columns made the next read fail (FileNotFoundError) and the
    validation with it. ``Lake.with_opened`` reads again from the newer commit, whole."""
    root, options, lake = lake_root
    reader = _small_reads(root, options, lake)
    _commit(lake, "A", 300_000)
    calls = []

    def judge(part):
        calls.append(part.manifest.attempts)
        tags = part.read(["tag"]).column("tag").to_pylist()
        if len(calls) == 1:
            _commit(lake, "B", 200_000)  # a re-run lands between two columns, and removes A's files
        return tags, part.read(["i"]).column("i").to_pylist()

    tags, numbers = reader.with_opened("d", "2024-03-01", judge)
    assert (set(tags), len(tags)) in [({"A"}, 300_000), ({"B"}, 200_000)]
    assert numbers == list(range(len(tags)))
    if options:  # A's files were gone: read again, from B's commit
        assert (tags[0], len(calls)) == ("B", 2)
    assert _attempts(lake) == sorted(lake.require("d", "2024-03-01").attempts)


def test_a_stream_whose_commit_a_rerun_replaced_ends_with_a_retryable_error_naming_both(lake_root):
    """Inference and drift stream a partition; what they already took cannot be taken back, so a
    stream whose files a newer commit removed (S3) ends with ``PartitionReplaced`` (retryable, naming
    both commits), not the storage's bare "key does not exist". On a local disk it reads on."""
    from cormorant.lake import PartitionReplaced

    root, options, lake = lake_root
    reader = _small_reads(root, options, lake)
    _commit(lake, "A", 300_000)
    old = lake.require("d", "2024-03-01").attempts
    stream = reader.iter_batches("d", "2024-03-01", batch_size=10_000, columns=["i"])
    taken = next(stream).num_rows
    _commit(lake, "B", 200_000)
    if not options:
        assert taken + sum(b.num_rows for b in stream) == 300_000
        return
    with pytest.raises(PartitionReplaced) as raised:
        for _ in stream:
            pass
    new = lake.require("d", "2024-03-01").attempts
    assert raised.value.retryable
    assert all(a in str(raised.value) for a in (*old, *new)), str(raised.value)


def _small_reads(root, options, lake):
    """The lake, read as a partition far bigger than S3's 50 MB read-ahead is: the test's partitions,
    scaled down with the read-ahead (writes keep the default)."""
    if not options:
        return lake
    from upath import UPath

    return Lake(UPath(root, **options, default_block_size=2**16))


def _commit(lake, tag: str, rows: int) -> None:
    """``rows`` rows tagged ``tag``, ``i`` counting from 0, in row groups of 50k; "noise" puts MBs
    between "tag" and "i"."""
    schema = pa.schema([("tag", pa.string()), ("noise", pa.float64()), ("i", pa.int64())])
    noise = np.random.default_rng(rows).random(rows)
    table = pa.Table.from_pydict({"tag": [tag] * rows, "noise": noise, "i": range(rows)}, schema=schema)
    lake.write_partition("d", "2024-03-01", table.to_batches(50_000), schema=schema, row_group_rows=50_000)
