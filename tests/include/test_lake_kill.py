"""A writer killed with SIGKILL at any point leaves no partial partition visible, and its re-run
commits a complete one; its unused folder is removed once stale. The child process is stopped at
chosen points of the write protocol."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cormorant.lake import Lake

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import pyarrow as pa
    import cormorant.lake as lake_module
    from cormorant.lake import Lake

    root, point, marker, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    def mark(text):
        with open(marker, "w") as f:
            f.write(text)

    def batches():
        for i in range(n):
            if point == "mid_stream" and i == n // 2:
                mark("mid_stream")
                time.sleep(30)
            yield pa.RecordBatch.from_pydict({"id": list(range(i * 100, i * 100 + 100))})

    if point == "before_manifest":
        original = lake_module.write_bytes_atomic
        def slow(path, data):
            mark("before_manifest"); time.sleep(30); original(path, data)
        lake_module.write_bytes_atomic = slow
    if point == "before_rename":
        original_replace = os.replace
        def slow_replace(a, b):
            mark("before_rename"); time.sleep(30); original_replace(a, b)
        lake_module.os.replace = slow_replace

    Lake(root).write_partition("d", "2024-03-01", batches(), schema=pa.schema([("id", pa.int64())]))
    mark("done")
    """
)


def _run_child(root, point, marker, n):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), point, str(marker), str(n)])


def _wait_for(marker, text, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text() == text:
            return
        assert process.poll() is None, f"child exited early with {process.returncode}"
        time.sleep(0.05)
    raise AssertionError(f"child never reached {text}")


@pytest.mark.parametrize("previous", [False, True], ids=["first-write", "rewrite"])
@pytest.mark.parametrize("point", ["mid_stream", "before_manifest", "before_rename"])
def test_sigkill_at_any_point_leaves_no_partial_partition(tmp_path, point, previous):
    root, marker = tmp_path / "lake", tmp_path / "marker"
    lake = Lake(root)
    if previous:
        child = _run_child(root, "complete", marker, 4)
        assert child.wait(60) == 0
    before = lake.manifest("d", "2024-03-01")

    child = _run_child(root, point, marker, 20)
    _wait_for(marker, point, child)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)

    after = lake.manifest("d", "2024-03-01")
    if previous:
        assert after == before
        assert lake.read("d", "2024-03-01").num_rows == 400
    else:
        assert after is None
        assert lake.partitions("d") == []

    rerun = _run_child(root, "complete", marker, 20)
    assert rerun.wait(60) == 0
    assert lake.read("d", "2024-03-01").column("id").to_pylist() == list(range(2000))
    # The killed writer's folder is unused but never said it was done: it stays until it is stale,
    # because a live writer looks the same; once stale, cleanup removes it.
    in_use = lake.require("d", "2024-03-01").attempts
    leftovers = {p.name for p in (root / "d" / "ds=2024-03-01").iterdir() if p.name.startswith("run=")}
    assert in_use <= leftovers
    assert len(leftovers - in_use) <= 1
    from datetime import timedelta

    lake.remove_unused_attempts("d", "2024-03-01", stale_after=timedelta(0))
    leftovers = {p.name for p in (root / "d" / "ds=2024-03-01").iterdir() if p.name.startswith("run=")}
    assert leftovers == in_use
