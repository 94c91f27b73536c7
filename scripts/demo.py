"""Run Cormorant's whole pipeline on the embedded default and print a summary.

    make demo            # or: .venv/bin/python scripts/demo.py [--days 4] [--scale 1] [--keep]

Seeds the embedded SQLite warehouse with the example churn data (features in one table, outcomes in
another, the last day drifted), then runs ``cormorant run include/examples/churn_late.yaml``: the real
DAGs, day by day, as the nightly chain runs them. Each day is scored the night its features land,
before its outcome is known; the outcomes land the next day, and the realized performance of the model
that scored the day is measured then. The drifted last day signals retraining. Everything lives under
``.cormorant/demo`` (Airflow's SQLite database, the warehouse, the lake, MLflow).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins")]
SPEC = ROOT / "include" / "examples" / "churn_late.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=ROOT / ".cormorant" / "demo")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 3, 1))
    parser.add_argument("--days", type=int, default=4, help="consecutive days to run (>= 4)")
    parser.add_argument("--drift-days", type=int, default=1, help="how many of the last days are drifted")
    parser.add_argument(
        "--scale",
        type=int,
        default=1,
        help="rows a day, times the example's 900-1299 (1 to 76; the same distributions)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the previous demo state instead of starting over"
    )
    args = parser.parse_args()

    from cormorant.spec import load_spec
    from cormorant.synthetic import seed_sqlite
    from cormorant_provider.cli import main as cormorant

    if args.home.exists() and not args.keep:
        shutil.rmtree(args.home)
    args.home.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    days = [args.start + timedelta(days=i) for i in range(args.days)]
    drift_start = days[-args.drift_days] if args.drift_days else None
    counts = seed_sqlite(
        args.home / "warehouse.db",
        days,
        drift_start=drift_start,
        labels_table="churn_labels",
        scale=args.scale,
    )
    print(
        f"Seeded the embedded warehouse: {sum(counts.values())} rows over {len(days)} days "
        f"(drifted from {drift_start}); outcomes in churn_labels",
        flush=True,
    )
    # The spec's 7-day window would wait a week for its first model; the demo trains on the days it has
    # (one to train on beside the holdout, and the day whose labels are not final yet).
    window = min(load_spec(SPEC).training.window_days, len(days) - 1)
    code = cormorant(
        ["run", str(SPEC), "--from", str(days[0]), "--to", str(days[-1]), "--window-days", str(window)]
        + ["--home", str(args.home)]
    )
    print(f"\nDemo finished in {time.monotonic() - began:.0f}s; state under {args.home}")
    return code


if __name__ == "__main__":
    sys.exit(main())
