"""Run Cormorant's whole pipeline on the embedded default and print a summary.

    make demo            # or: .venv/bin/python scripts/demo.py [--days 4] [--keep]

Seeds the embedded SQLite warehouse with the example ``churn`` data (the last days drifted), then
runs the real DAGs with ``dag.test()`` in the order the Asset chain runs them: ingest and validate
every day, train, predict and check drift, and retrain when drift signals it. Everything lives under
``.cormorant/demo`` (Airflow's SQLite database, the warehouse, the lake, MLflow).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=ROOT / ".cormorant" / "demo")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 3, 1))
    parser.add_argument("--days", type=int, default=4, help="consecutive days to run (>= 3)")
    parser.add_argument("--drift-days", type=int, default=1, help="how many of the last days are drifted")
    parser.add_argument(
        "--keep", action="store_true", help="keep the previous demo state instead of starting over"
    )
    args = parser.parse_args()

    from cormorant.config import embedded_environment

    if args.home.exists() and not args.keep:
        shutil.rmtree(args.home)
    (args.home / "airflow").mkdir(parents=True, exist_ok=True)
    os.environ.update(embedded_environment(args.home))
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)

    from cormorant.synthetic import seed_sqlite

    days = [args.start + timedelta(days=i) for i in range(args.days)]
    drift_start = days[-args.drift_days] if args.drift_days else None
    counts = seed_sqlite(args.home / "warehouse.db", days, drift_start=drift_start)
    print(
        f"Seeded the embedded warehouse: {sum(counts.values())} rows over {len(days)} days "
        f"(drifted from {drift_start})",
        flush=True,
    )

    from cormorant_provider.pipeline import PipelineRunner

    runner = PipelineRunner.from_dag_folder(ROOT / "dags", spec_name="churn")
    iso = [d.isoformat() for d in days]
    for d in iso:
        runner.run("ingest", d)
        runner.run("validate", d)
    first_train = iso[-args.drift_days - 1]
    runner.run("train", first_train)
    for d in iso[iso.index(first_train) :]:
        runner.run("predict", d)
        if runner.run("drift", d).retrain_signalled:
            runner.run("train", d)
            runner.run("predict", d)
            runner.run("drift", d)
    print()
    print(runner.summary_text())
    print(f"\nDemo finished in {time.monotonic() - began:.0f}s; state under {args.home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
