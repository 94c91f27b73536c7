"""Seed a PostgreSQL warehouse with the example ``churn`` data (the compose stack's init service runs it).

    python scripts/seed_warehouse.py --conn-id cormorant_warehouse --start 2024-03-01 --days 14 --drift-days 3

The connection comes from Airflow (an ``AIRFLOW_CONN_*`` variable or the metadata database), so no
credential is passed on the command line.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conn-id", default="cormorant_warehouse")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 3, 1))
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--drift-days", type=int, default=3)
    args = parser.parse_args()

    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from cormorant.synthetic import seed_postgres

    days = [args.start + timedelta(days=i) for i in range(args.days)]
    drift_start = days[-args.drift_days] if args.drift_days else None
    conn = PostgresHook(postgres_conn_id=args.conn_id).get_conn()
    counts = seed_postgres(conn, days, drift_start=drift_start)
    conn.close()
    print(f"seeded {sum(counts.values())} rows over {len(counts)} days (drift from {drift_start})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
