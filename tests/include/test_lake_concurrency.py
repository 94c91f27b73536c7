"""Overlapping writers of one partition, as real processes, on a local folder and on S3 (moto's server):
a commit never points at files another writer removed, the last commit wins, and a reader always sees
one complete commit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

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
