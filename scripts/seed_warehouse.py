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
    parser.add_argument(
        "--labels-table",
        default="churn_labels",
        help="also keep the outcomes in a table of their own, as include/examples/churn_late.yaml reads "
        "them (empty: none)",
    )
    args = parser.parse_args()

    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from cormorant.synthetic import seed_postgres

    days = [args.start + timedelta(days=i) for i in range(args.days)]
    drift_start = days[-args.drift_days] if args.drift_days else None
    conn = PostgresHook(postgres_conn_id=args.conn_id).get_conn()
    counts = seed_postgres(conn, days, drift_start=drift_start)
    if args.labels_table:
        from cormorant.spec import IDENTIFIER

        if not IDENTIFIER.match(args.labels_table):
            parser.error(f"--labels-table {args.labels_table!r} is not a plain SQL identifier")
        with conn.cursor() as cursor:  # the hook's connection is psycopg 3 or psycopg2
            cursor.execute(f"DROP TABLE IF EXISTS {args.labels_table}")
            columns = "customer_id, event_ts, churned"
            cursor.execute(f"CREATE TABLE {args.labels_table} AS SELECT {columns} FROM customer_activity")
        conn.commit()
    conn.close()
    print(f"seeded {sum(counts.values())} rows over {len(counts)} days (drift from {drift_start})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
