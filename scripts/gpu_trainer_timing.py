"""Time the trainer on the same data on the CPU and on the GPU (for docs/kubernetes.md).

    python scripts/gpu_trainer_timing.py --days 30 [--out timings.json]

Seeds a local lake with ``--days`` of the example data, then runs the trainer CLI for an XGBoost and an
MLP trial twice: once with ``CUDA_VISIBLE_DEVICES=`` (CPU) and once with the GPU visible, and prints the
wall time of each with the device the trainer reported. Needs a machine with an NVIDIA GPU and CUDA
builds of torch and xgboost (the trainer image); on a machine without one both runs use the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include")]

TRIALS = [
    ("xgboost", {"max_depth": 8, "n_estimators": 400, "learning_rate": 0.05}),
    ("mlp", {"hidden_units": 256, "layers": 3, "epochs": 20, "learning_rate": 0.001, "batch_size": 1024}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from cormorant.config import embedded_environment
    from cormorant.lake import Lake
    from cormorant.spec import load_spec
    from cormorant.synthetic import seed_sqlite
    from cormorant.trainer import Trial
    from cormorant.validation import validate_frame, validation_report_key
    from cormorant.warehouse import extract_partition, raw_dataset

    home = Path(tempfile.mkdtemp(prefix="cormorant-gpu-"))
    env = {**os.environ, **embedded_environment(home)}
    spec_path = ROOT / "include" / "specs" / "churn.yaml"
    spec = load_spec(spec_path)
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(args.days)]
    seed_sqlite(home / "warehouse.db", days)
    lake = Lake((home / "lake").as_uri())
    for day in days:
        manifest = extract_partition(
            lambda: sqlite3.connect(home / "warehouse.db"), spec, day.isoformat(), lake
        )
        frame = lake.read(raw_dataset(spec), day.isoformat()).to_pandas()
        result = validate_frame(frame, spec, partition=day.isoformat(), content_hash=manifest.content_hash)
        lake.write_json(validation_report_key(spec, day.isoformat()), result.to_dict())
    partitions = [d.isoformat() for d in days]
    timings = []
    for family, params in TRIALS:
        trial = Trial(
            trial_id=f"{family}-timing",
            family=family,
            params=params,
            train_partitions=partitions[:-1],
            holdout_partitions=partitions[-1:],
            folds=3,
            seed=1,
        )
        for device, visible in (("cpu", ""), ("gpu", os.environ.get("CUDA_VISIBLE_DEVICES", "0"))):
            out = home / f"{family}-{device}.json"
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cormorant.trainer",
                    "--spec",
                    str(spec_path),
                    "--trial",
                    json.dumps(asdict(trial)),
                    "--output",
                    str(out),
                ],
                env={**env, "CUDA_VISIBLE_DEVICES": visible},
                check=True,
            )
            result = json.loads(out.read_text())
            timings.append(
                {
                    "family": family,
                    "asked": device,
                    "device": result["device"],
                    "seconds": round(time.perf_counter() - started, 1),
                    "cv_mean": result["cv_mean"],
                    "rows": sum(lake.require(raw_dataset(spec), p).row_count for p in partitions),
                }
            )
            print(json.dumps(timings[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(timings, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
