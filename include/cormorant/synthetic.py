"""A deterministic synthetic warehouse for the example ``churn`` spec.

Daily customer rows with numeric and categorical features, realistic nulls and a label with real
signal. ``drift`` shifts the distribution (higher charges, more support calls, more monthly
contracts) so that drift checks have something to see on later days. ``concept_shift`` keeps the
features exactly as they are but turns the label's relation to them around (what drove churn now
keeps customers): the inputs look the same, so drift stays quiet, while a model's realized
performance collapses once the labels land.

Labels can live in a table of their own (``labels_table``: the key, the event time and the target),
filled for only some days, as when outcomes arrive days after the features.
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


# A day's customer ids are ``day.toordinal() * 100_000 + row``: unique across days up to 100,000 rows a day.
MAX_SCALE = 76


def rows_for_day(day: date, seed: int = 0, scale: int = 1) -> int:
    """How many rows the generator makes for ``day``: between 900 and 1299, times ``scale``."""
    if not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"scale={scale}: expected a whole number from 1 to {MAX_SCALE} (rows a day x scale)")
    return scale * int(np.random.default_rng([seed, day.toordinal(), 1]).integers(900, 1300))


LABEL_COLUMNS = {"customer_id": "BIGINT NOT NULL", "event_ts": "TIMESTAMP NOT NULL", "churned": "INTEGER"}


def generate_day(
    day: date, *, seed: int = 0, drift: float = 0.0, concept_shift: bool = False, scale: int = 1
) -> pd.DataFrame:
    """One day of rows (``scale`` times as many as the example's, drawn from the same distributions);
    the same arguments always give the same frame."""
    n = rows_for_day(day, seed, scale)
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
    if concept_shift:
        logit = -logit
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


def _create_table(table: str, columns: dict[str, str]) -> list[str]:
    return [
        f"DROP TABLE IF EXISTS {table}",
        f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, t in columns.items())})",
    ]


def _frames(
    days: Iterable[date],
    seed: int,
    drift_start: date | None,
    strength: float,
    concept_days: Iterable[date],
    scale: int = 1,
) -> Iterable[tuple[date, pd.DataFrame]]:
    shifted = set(concept_days)
    for day in days:
        drift = drift_for(day, drift_start, strength)
        yield day, generate_day(day, seed=seed, drift=drift, concept_shift=day in shifted, scale=scale)


def _tables(
    frame: pd.DataFrame, table: str, labels_table: str | None
) -> list[tuple[str, dict[str, str], pd.DataFrame]]:
    """(table, its columns, its rows): one table, or features and labels apart."""
    if labels_table is None:
        return [(table, COLUMNS, frame)]
    features = {c: t for c, t in COLUMNS.items() if c != "churned"}
    return [
        (table, features, frame[list(features)]),
        (labels_table, LABEL_COLUMNS, frame[list(LABEL_COLUMNS)]),
    ]


def seed_sqlite(
    path: Path | str,
    days: Iterable[date],
    *,
    seed: int = 0,
    drift_start: date | None = None,
    strength: float = 1.0,
    table: str = TABLE,
    labels_table: str | None = None,
    concept_days: Iterable[date] = (),
    scale: int = 1,
) -> dict[str, int]:
    """Create (or refill) the embedded warehouse, ``scale`` times the example's rows a day; returns rows
    written per day (ISO date -> count)."""
    counts: dict[str, int] = {}
    days = list(days)
    with sqlite3.connect(path) as conn:
        for name, columns, _ in _tables(generate_day(days[0]).head(0), table, labels_table):
            for statement in _create_table(name, columns):
                conn.execute(statement)
        for day, frame in _frames(days, seed, drift_start, strength, concept_days, scale):
            for name, columns, rows in _tables(frame, table, labels_table):
                conn.executemany(
                    f"INSERT INTO {name} VALUES ({', '.join('?' * len(columns))})",
                    rows.astype(object).where(rows.notna(), None).itertuples(index=False, name=None),
                )
            counts[day.isoformat()] = len(frame)
        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_ts ON {table} (event_ts)")
    return counts


def _copy(cursor: Any, table: str, rows: pd.DataFrame) -> None:
    import io

    buffer = io.StringIO()
    rows.to_csv(buffer, index=False, header=False, na_rep="")
    buffer.seek(0)
    statement = f"COPY {table} FROM STDIN WITH (FORMAT csv)"
    if hasattr(cursor, "copy_expert"):  # psycopg2
        cursor.copy_expert(statement, buffer)
    else:  # psycopg 3
        with cursor.copy(statement) as copy:
            copy.write(buffer.getvalue())


def seed_postgres(
    conn: Any,
    days: Iterable[date],
    *,
    seed: int = 0,
    drift_start: date | None = None,
    strength: float = 1.0,
    table: str = TABLE,
    labels_table: str | None = None,
    label_days: Iterable[date] | None = None,
    concept_days: Iterable[date] = (),
) -> dict[str, int]:
    """Create (or refill) the example table in PostgreSQL (a psycopg2 or psycopg 3 connection), with COPY.

    With ``labels_table``, labels go to a table of their own, and only for ``label_days`` (default:
    every day); :func:`insert_labels_postgres` adds the others later."""
    counts: dict[str, int] = {}
    days = list(days)
    labelled = set(days if label_days is None else label_days)
    with conn.cursor() as cursor:
        for name, columns, _ in _tables(generate_day(days[0]).head(0), table, labels_table):
            for statement in _create_table(name, columns):
                cursor.execute(statement)
        for day, frame in _frames(days, seed, drift_start, strength, concept_days):
            for name, _, rows in _tables(frame, table, labels_table):
                if name != labels_table or day in labelled:
                    _copy(cursor, name, rows)
            counts[day.isoformat()] = len(frame)
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {table}_ts ON {table} (event_ts)")
    conn.commit()
    return counts


def insert_labels_postgres(
    conn: Any,
    days: Iterable[date],
    *,
    labels_table: str,
    seed: int = 0,
    drift_start: date | None = None,
    strength: float = 1.0,
    concept_days: Iterable[date] = (),
) -> None:
    """The outcomes of ``days`` arrive: add their rows to the label table."""
    with conn.cursor() as cursor:
        for _, frame in _frames(days, seed, drift_start, strength, concept_days):
            _copy(cursor, labels_table, frame[list(LABEL_COLUMNS)])
    conn.commit()


def land_days(spec: Any, lake: Any, days: Iterable[str], *, validated: bool = True) -> None:
    """The generator's days in ``lake`` as the ingest and validate DAGs leave them: each a raw partition
    and, when ``validated``, its validation report and its validated labels (for benchmarks and tests
    that start from a sweep, with no warehouse)."""
    import pyarrow as pa

    from cormorant.labels import labels_from_features, validate_labels
    from cormorant.validation import validate_partition, validation_report_key
    from cormorant.warehouse import conform, lake_schema, raw_dataset, spec_types

    for day in days:
        table = pa.Table.from_pandas(generate_day(date.fromisoformat(day)), preserve_index=False)
        schema = lake_schema(table.schema, spec_types(spec))
        lake.write_partition(
            raw_dataset(spec), day, [conform(b, schema) for b in table.to_batches()], schema=schema
        )
        if not validated:
            continue
        result = validate_partition(lake, raw_dataset(spec), day, spec)
        lake.write_json(validation_report_key(spec, day), result.to_dict())
        labels_from_features(spec, lake, day)
        validate_labels(spec, lake, day)
