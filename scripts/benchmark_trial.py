"""Benchmark: one sweep trial's fixed cost, the time it spends beyond fitting and scoring.

    .venv/bin/python scripts/benchmark_trial.py [--families linear xgboost mlp] [--days 3]

Runs the trainer CLI exactly as the local backend and a Kubernetes pod do (``python -m
cormorant.trainer --spec ... --trial @trial.json``), on ``--days`` days of the example data in a scratch
lake and a SQLite MLflow store (the embedded default's), one trial per family, each a fresh process;
then each again, fresh, logging to an ``mlflow server`` on loopback over HTTP as a pod does (after
unmeasured trials that start the server's workers; ``--no-server`` leaves this out); then each on a
warm trainer process (``cormorant.sweep.TrainerPool``, what ``cormorant run`` starts ahead of its
sweeps) after a first, unmeasured trial there. Those trials export every model (each fresh process gets
an empty ONNX graph cache, the warm one none): what a spec's first trial of an architecture pays. The
MLP, whose export the cache keeps (``cormorant.graph_cache``), runs each way again with the cache
filled by an unmeasured trial of the same architecture, as every later sweep of the spec finds it. The
trainer reports its compute (CV
fits, the refit, scoring: ``compute_seconds``) and its time inside ``run_trial``; the rest of the
process's wall time is start-up and imports. The fixed cost is wall time minus compute (target: at
most 3 s). Results in ``benchmarks/results/trial-<timestamp>.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

from bench_common import add_repeat, finish, median_run, say  # noqa: E402

SPEC = ROOT / "include" / "specs" / "churn.yaml"
PARAMS = {
    "linear": {"C": 1.0},
    "xgboost": {"max_depth": 3, "n_estimators": 60, "learning_rate": 0.1},
    "mlp": {"hidden_units": 32, "layers": 2, "epochs": 5, "learning_rate": 0.005},
}


def setup(home: Path, days: list[str], *, validated: bool = False) -> None:
    """The days in a scratch lake, and the MLflow store with the spec's experiment (as after a first
    sweep: creating the store is a one-off, not a trial's cost)."""
    from cormorant.lake import Lake
    from cormorant.spec import load_spec
    from cormorant.synthetic import land_days

    land_days(load_spec(SPEC), Lake(home / "lake"), days, validated=validated)
    _experiment(home)


def _experiment(home: Path, server: str | None = None) -> None:
    """The spec's experiment in the store the trials log to."""
    from cormorant.config import Settings
    from cormorant.spec import load_spec
    from cormorant.tracking import ensure_experiment

    ensure_experiment(load_spec(SPEC), Settings.from_env(_env(home, server)))


def _env(home: Path, server: str | None = None) -> dict[str, str]:
    """A SQLite MLflow store in ``home``; or, given a ``server`` URL, that server over HTTP, as a pod talks
    to it (runs and artifacts through the server's own store)."""
    store = (
        {"MLFLOW_TRACKING_URI": server}
        if server
        else {
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "CORMORANT_MLFLOW_ARTIFACT_URI": (home / "artifacts").as_uri(),
        }
    )
    return {"CORMORANT_HOME": str(home), "CORMORANT_LAKE_URI": (home / "lake").as_uri(), **store}


@contextlib.contextmanager
def tracking_server(home: Path) -> Iterator[str]:
    """``mlflow server`` on loopback (a SQLite backend, artifacts proxied to a folder): what a pod's
    trainer reaches over HTTP, where it has no SQL store of its own to start."""
    import socket

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{home / 'server.db'}",
        "--artifacts-destination", (home / "server-artifacts").as_uri(),
    ]  # fmt: skip
    log = (home / "mlflow-server.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                requests.get(f"{url}/health", timeout=5)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start; see {log.name}") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def _trial(family: str, days: list[str]) -> dict:
    from cormorant.trainer import Trial

    return asdict(
        Trial(
            trial_id=f"{family}-0",
            family=family,
            params=PARAMS[family],
            train_partitions=days[:-1],
            holdout_partitions=days[-1:],
            folds=3,
            seed=7,
            sweep_key="bench",
        )
    )


def run(
    family: str,
    home: Path,
    days: list[str],
    python: str = sys.executable,
    server: str | None = None,
    graphs: Path | None = None,
) -> dict:
    """The trial in a fresh trainer process (``python``), as a pod and a scheduler's trial task run it,
    with ``graphs`` as its ONNX graph cache (None: a new, empty one)."""
    from cormorant.trainer import trainer_command

    cache = graphs or Path(tempfile.mkdtemp(prefix="graphs-", dir=home))
    env = {
        **os.environ,
        **_env(home, server),
        "PYTHONPATH": str(ROOT / "include"),
        "CORMORANT_GRAPH_CACHE": str(cache),
    }
    out = home / f"{family}-result.json"
    started = time.perf_counter()
    proc = subprocess.run(
        [python, *trainer_command(SPEC, _trial(family, days), out)[1:]],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        return {"family": family, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    row = _row(family, "fresh", wall, json.loads(out.read_text()), cached=graphs is not None)
    return {**row, "python": python, "tracking": "server" if server else "sqlite"}


def run_warm(family: str, home: Path, days: list[str], pool: object, *, cached: bool = False) -> dict:
    """The trial on a warm trainer process (``cormorant.sweep.TrainerPool``, what ``cormorant run``
    starts ahead of its sweeps), after a first trial there."""
    started = time.perf_counter()
    (result,) = pool.run(0, SPEC, [_trial(family, days)])
    wall = time.perf_counter() - started
    if result.get("status") != "ok":
        return {"family": family, "error": result.get("error", "failed")}
    return _row(family, "warm", wall, result, cached=cached)


def _row(family: str, process: str, wall: float, result: dict, *, cached: bool) -> dict:
    """One measured trial: its wall time split into compute, time in the trainer, and the rest."""
    return {
        "family": family,
        "process": process,
        "graph": ("from the cache" if cached else "exported") if family == "mlp" else "converted",
        "wall_seconds": wall,
        "in_trainer_seconds": result["seconds"],
        "compute_seconds": result["compute_seconds"],
        "startup_seconds": wall - result["seconds"],
        "fixed_seconds": wall - result["compute_seconds"],
    }


PROCESS = {"fresh": "fresh (CLI)", "warm": "warm (`cormorant run`)"}
TRACKING = {
    "sqlite": ", SQLite store (a trial task, embedded)",
    "server": ", MLflow server over HTTP (a pod)",
}


def render(results: list[dict]) -> str:
    lines = [
        "| family | trainer process | ONNX graph | wall (s) | compute: fit + score (s) "
        "| start-up and imports (s) | fixed cost (s) | vs 3 s target |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['family']} | – | – | – | – | – | – | {r['error']} |")
            continue
        lines.append(
            f"| {r['family']} | {PROCESS[r['process']] + TRACKING.get(r.get('tracking'), '')} | "
            f"{r.get('graph', '–')} | "
            f"{r['wall_seconds']:.1f} | "
            f"{r['compute_seconds']:.1f} | "
            f"{r['startup_seconds']:.1f} | **{r['fixed_seconds']:.1f}** | {r['fixed_seconds'] / 3:.1f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(PARAMS))
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter of the fresh trainer processes, e.g. an environment with only "
        "requirements-trainer.txt, as in the trainer image (default: this one)",
    )
    parser.add_argument("--no-warm", action="store_true", help="only the fresh trainer processes")
    parser.add_argument(
        "--no-server",
        action="store_true",
        help="leave out the fresh trials that log to an MLflow server over HTTP, as a pod does",
    )
    add_repeat(parser)
    parser.add_argument("--rows", help=argparse.SUPPRESS)  # make bench passes sizes; trials use days
    args = parser.parse_args(argv)

    days = [(date(2024, 3, 1) + timedelta(days=i)).isoformat() for i in range(args.days)]
    results = []

    def keep(label: str, runs: list[dict]) -> None:
        results.append(
            say(
                label,
                median_run(runs, key="wall_seconds"),
                lambda r: (
                    f"wall {r['wall_seconds']:5.1f}s  compute {r['compute_seconds']:5.1f}s  "
                    f"fixed {r['fixed_seconds']:5.1f}s"
                ),
            )
        )

    with tempfile.TemporaryDirectory(prefix="cormorant-bench-trial-") as tmp:
        home = Path(tmp)
        setup(home, days)
        graphs = home / "graphs-kept"  # filled by an unmeasured MLP trial of the same architecture
        for family in args.families:
            keep(f"{family:<8} fresh", [run(family, home, days, args.python) for _ in range(args.repeat)])
        if "mlp" in args.families:
            run("mlp", home, days, args.python, graphs=graphs)
            runs = [run("mlp", home, days, args.python, graphs=graphs) for _ in range(args.repeat)]
            keep("mlp      fresh, graph from the cache", runs)
        if not args.no_server:
            with tracking_server(home) as server:
                _experiment(home, server)
                # A deployed server is long-running: its 4 workers (the default) have each served
                # requests before. Here each starts its handlers on first use: done before the clock.
                for _ in range(4):
                    run("linear", home, days, args.python, server)
                for family in args.families:
                    runs = [run(family, home, days, args.python, server) for _ in range(args.repeat)]
                    keep(f"{family:<8} fresh, server", runs)
                if "mlp" in args.families:
                    runs = [run("mlp", home, days, args.python, server, graphs) for _ in range(args.repeat)]
                    keep("mlp      fresh, server, graph from the cache", runs)
        if args.no_warm:
            return finish("trial", results, render(results))
        os.environ.update(_env(home))
        with warm_pool(days, graph_cache="off") as pool:  # every trial exports
            for family in args.families:
                keep(f"{family:<8} warm ", [run_warm(family, home, days, pool) for _ in range(args.repeat)])
        if "mlp" in args.families:
            with warm_pool(days, graph_cache=str(graphs)) as pool:
                runs = [run_warm("mlp", home, days, pool, cached=True) for _ in range(args.repeat)]
                keep("mlp      warm, graph from the cache", runs)
    return finish("trial", results, render(results))


@contextlib.contextmanager
def warm_pool(days: list[str], *, graph_cache: str) -> Iterator[object]:
    """One warm trainer process with ``graph_cache``, after its first trial (not measured)."""
    from cormorant.sweep import TrainerPool

    os.environ["CORMORANT_GRAPH_CACHE"] = graph_cache
    with TrainerPool(1) as pool:
        pool.wait_ready()
        pool.run(0, SPEC, [_trial("linear", days)])
        yield pool


if __name__ == "__main__":
    main()
