"""The lake-wide lock that serialises registration and promotion, held by real processes, on a local
folder and on S3 (moto's server): one holder at a time, a dead holder does not block forever, a
waiter that gives up names the lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from support import new_bucket

from cormorant.lake import Lake

HOLDER = textwrap.dedent(
    """
    import json, sys, time
    from upath import UPath
    from cormorant.lake import Lake

    root, options, marker, hold_s = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    with Lake(UPath(root, **options)).exclusive("spec/registry/promotion.lock"):
        open(marker, "w").write(str(time.time()))
        time.sleep(hold_s)
        open(marker + ".released", "w").write(str(time.time()))
    """
)
KEY = "spec/registry/promotion.lock"


def _hold(root, options, marker, hold_s):
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, root, json.dumps(options), str(marker), str(hold_s)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the holder did not take the lock"
        time.sleep(0.05)
    return process


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "lake"), {}
    endpoint = request.getfixturevalue("s3_endpoint")
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    return f"s3://{new_bucket(endpoint)}/lake", options


def _lake(where):
    from upath import UPath

    root, options = where
    return Lake(UPath(root, **options))


def test_one_holder_at_a_time_and_a_waiter_that_gives_up_names_the_lock(where, tmp_path):
    holder = _hold(*where, tmp_path / "held", hold_s=2.0)
    lake = _lake(where)
    with (
        pytest.raises(TimeoutError, match=r"promotion\.lock still held after 0s"),
        lake.exclusive(KEY, timeout_s=0.3),
    ):
        pass
    with lake.exclusive(KEY, timeout_s=60):
        acquired = time.time()
    released = float((tmp_path / "held.released").read_text())
    assert acquired >= released, "the lock was taken while its holder still had it"
    assert holder.wait(30) == 0


def test_a_holder_that_dies_does_not_block_the_next(where, tmp_path):
    holder = _hold(*where, tmp_path / "held", hold_s=60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    lake = _lake(where)
    if where[0].startswith("s3://"):  # an object store has no kernel to release it: the lease runs out
        with pytest.raises(TimeoutError), lake.exclusive(KEY, timeout_s=0.5):
            pass
        time.sleep(1.2)
        stale_after_s = 1.0
    else:  # the kernel released the flock with the process
        stale_after_s = 3600.0
    started = time.monotonic()
    with lake.exclusive(KEY, timeout_s=10, stale_after_s=stale_after_s):
        pass
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("where", ["s3"], indirect=True)  # a local lake's lock is an flock
def test_a_lock_released_between_a_refused_create_and_the_next_look_is_taken(where, monkeypatch):
    """The object store refuses the create (held), then the holder lets go before the waiter looks:
    the waiter tries again and takes it (it raised "cannot create the lock" before)."""
    lake = _lake(where)
    fs = lake.path(KEY).fs
    create = fs.pipe_file
    refused = []

    def refused_once(path, value, **kwargs):
        if not refused:
            refused.append(path)
            raise FileExistsError("At least one of the pre-conditions you specified did not hold")
        return create(path, value, **kwargs)

    monkeypatch.setattr(fs, "pipe_file", refused_once)
    with lake.exclusive(KEY, timeout_s=5):
        assert lake.path(KEY).exists()
    assert refused and not lake.path(KEY).exists()
