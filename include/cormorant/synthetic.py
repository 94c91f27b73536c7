"""A deterministic synthetic warehouse for the example ``churn`` spec.

Daily customer rows with numeric and categorical features, realistic nulls and a label with real
signal. ``drift`` shifts the distribution (higher charges, more support calls, more monthly
contracts) so that drift checks have something to see on later days.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TABLE = "customer_activity"
COLUMNS = {
    "customer_id": "BIGINT NOT NULL",
    "event_ts": "TIMESTAMP NOT NULL",
    "tenure_months": "DOUBLE PRECISION",
    "monthly_charges": "DOUBLE PRECISION",
    "support_calls": "DOUBLE PRECISION",
    "usage_gb": "DOUBLE PRECISION",
    "contract_type": "TEXT",
    "region": "TEXT",
    "payment_method": "TEXT",
    "churned": "INTEGER NOT NULL",
}
CONTRACTS = ["monthly", "annual", "two_year"]
REGIONS = ["north", "south", "east", "west"]
PAYMENTS = ["card", "bank_transfer", "paypal", "cheque"]


def rows_for_day(day: date, seed: int = 0) -> int:
    """How many rows the generator makes for ``day`` (between 900 and 1299)."""
    return int(np.random.default_rng([seed, day.toordinal(), 1]).integers(900, 1300))


def generate_day(day: date, *, seed: int = 0, drift: float = 0.0) -> pd.DataFrame:
    """One day of rows; the same ``day``, ``seed`` and ``drift`` always give the same frame."""
    n = rows_for_day(day, seed)
    rng = np.random.default_rng([seed, day.toordinal(), 2])
    tenure = rng.gamma(2.0, 14.0, n).round()
    charges = np.clip(rng.normal(65 + 30 * drift, 20, n), 5, 400).round(2)
    calls = rng.poisson(1.2 + 2.0 * drift, n).astype(float)
    usage = rng.lognormal(3.0, 0.6, n).round(2)
    p_monthly = min(0.5 + 0.3 * drift, 0.95)
    contract = rng.choice(CONTRACTS, n, p=[p_monthly, (1 - p_monthly) * 0.6, (1 - p_monthly) * 0.4])
    region = rng.choice(REGIONS, n, p=[0.3, 0.3, 0.2, 0.2])
    payment = rng.choice(PAYMENTS, n, p=[0.45, 0.3, 0.15, 0.1])
    logit = (
        -1.2
        - 0.04 * tenure
        + 0.025 * (charges - 65)
        + 0.45 * calls
        + np.select([contract == "monthly", contract == "annual"], [1.1, -0.2], -1.0)
        + np.where(payment == "cheque", 0.6, 0.0)
        - 0.004 * usage
    )
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    seconds = np.sort(rng.integers(0, 86_400, n))
    start = datetime(day.year, day.month, day.day)
    frame = pd.DataFrame(
        {
            "customer_id": day.toordinal() * 100_000 + np.arange(n),
            "event_ts": [(start + timedelta(seconds=int(s))).strftime("%Y-%m-%d %H:%M:%S") for s in seconds],
            "tenure_months": tenure,
            "monthly_charges": charges,
            "support_calls": calls,
            "usage_gb": usage,
            "contract_type": contract.astype(object),
            "region": region.astype(object),
            "payment_method": payment.astype(object),
            "churned": churned,
        }
    )
    # Realistic gaps: a few missing values in several columns.
    for column, rate in {
        "tenure_months": 0.02,
        "usage_gb": 0.05,
        "region": 0.03,
        "contract_type": 0.01,
    }.items():
        mask = rng.random(n) < rate
        frame[column] = frame[column].astype(object).where(~mask, None)
    return frame


def drift_for(day: date, drift_start: date | None, strength: float = 1.0) -> float:
    """The drift knob for ``day``: 0 before ``drift_start``, ``strength`` from then on."""
    return strength if drift_start is not None and day >= drift_start else 0.0


def _create_table(table: str) -> list[str]:
    return [
        f"DROP TABLE IF EXISTS {table}",
        f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, t in COLUMNS.items())})",
    ]


def _frames(
    days: Iterable[date], seed: int, drift_start: date | None, strength: float
) -> Iterable[tuple[date, pd.DataFrame]]:
    for day in days:
        yield day, generate_day(day, seed=seed, drift=drift_for(day, drift_start, strength))


def seed_sqlite(
    path: Path | str,
    days: Iterable[date],
    *,
    seed: int = 0,
    drift_start: date | None = None,
    strength: float = 1.0,
    table: str = TABLE,
) -> dict[str, int]:
    """Create (or refill) the embedded warehouse; returns rows written per day (ISO date -> count)."""
    counts: dict[str, int] = {}
    with sqlite3.connect(path) as conn:
        for statement in _create_table(table):
            conn.execute(statement)
        for day, frame in _frames(days, seed, drift_start, strength):
            conn.executemany(
                f"INSERT INTO {table} VALUES ({', '.join('?' * len(COLUMNS))})",
                frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None),
            )
            counts[day.isoformat()] = len(frame)
        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_ts ON {table} (event_ts)")
    return counts


def seed_postgres(
    conn: Any,
    days: Iterable[date],
    *,
    seed: int = 0,
    drift_start: date | None = None,
    strength: float = 1.0,
    table: str = TABLE,
) -> dict[str, int]:
    """Create (or refill) the example table in PostgreSQL (a psycopg2 or psycopg 3 connection), with COPY."""
    import io

    counts: dict[str, int] = {}
    with conn.cursor() as cursor:
        for statement in _create_table(table):
            cursor.execute(statement)
        for day, frame in _frames(days, seed, drift_start, strength):
            buffer = io.StringIO()
            frame.to_csv(buffer, index=False, header=False, na_rep="")
            buffer.seek(0)
            statement = f"COPY {table} FROM STDIN WITH (FORMAT csv)"
            if hasattr(cursor, "copy_expert"):  # psycopg2
                cursor.copy_expert(statement, buffer)
            else:  # psycopg 3
                with cursor.copy(statement) as copy:
                    copy.write(buffer.getvalue())
            counts[day.isoformat()] = len(frame)
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {table}_ts ON {table} (event_ts)")
    conn.commit()
    return counts
