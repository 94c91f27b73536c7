"""Sweep planning: the training window, its readiness, and the trials to run.

The window is the ``window_days`` days ending at the run's partition; the last ``holdout_days`` are
held out for the champion comparison, the rest is cross-validated. Every partition used must be
committed and have passed validation on its current content; a partition that failed validation
stops the sweep (nothing is trained, nothing promoted).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from dataclasses import asdict
from datetime import date, timedelta
from typing import Any

from cormorant import __version__
from cormorant.lake import Lake
from cormorant.spec import FAMILIES, ModelSpec, TrialResources
from cormorant.trainer import Trial
from cormorant.validation import validation_report_key
from cormorant.warehouse import raw_dataset

log = logging.getLogger(__name__)


class SweepNotReady(RuntimeError):
    """The training window cannot be used; the message lists every partition at fault."""


def window(end: str, days: int) -> list[str]:
    last = date.fromisoformat(end)
    return [(last - timedelta(days=i)).isoformat() for i in reversed(range(days))]


def grid(space: dict[str, list[Any]], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` points of a parameter grid, in a stable order."""
    names = sorted(space)
    points = [
        dict(zip(names, values, strict=True)) for values in itertools.product(*(space[n] for n in names))
    ]
    return points[:limit]


def ready_partitions(spec: ModelSpec, lake: Lake, candidates: list[str]) -> dict[str, str]:
    """Committed, validated partitions among ``candidates`` (-> content hash); raises on a bad one."""
    ready: dict[str, str] = {}
    problems: list[str] = []
    absent: list[str] = []
    for partition in candidates:
        manifest = lake.manifest(raw_dataset(spec), partition)
        if manifest is None:
            absent.append(partition)
            continue
        report = lake.read_json(validation_report_key(spec, partition))
        if report is None:
            problems.append(f"{partition}: not validated yet")
        elif report.get("content_hash") != manifest.content_hash:
            problems.append(f"{partition}: re-ingested since its validation; validate it again")
        elif not report.get("success"):
            failed = ", ".join(f"{f['expectation']}({f['column']})" for f in report.get("failures", []))
            problems.append(f"{partition}: failed validation: {failed}")
        else:
            ready[partition] = manifest.content_hash
    if absent:
        log.info("sweep %s: %d day(s) of the window are not in the lake: %s", spec.name, len(absent), absent)
    if problems:
        raise SweepNotReady(
            f"spec {spec.name!r}: the training window has partitions that cannot be used:\n- "
            + "\n- ".join(problems)
        )
    return ready


def trial_cache_key(spec: ModelSpec, trial: dict[str, Any]) -> str:
    """What makes two trials the same: data (manifest hashes), trainer version, spec, family, params, CV."""
    keyed = {
        k: trial[k]
        for k in (
            "family",
            "params",
            "train_partitions",
            "holdout_partitions",
            "folds",
            "seed",
            "manifest_hashes",
        )
    }
    payload = {"trial": keyed, "trainer": __version__, "spec": spec.fingerprint}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def plan_sweep(
    spec: ModelSpec,
    lake: Lake,
    end_partition: str,
    *,
    window_days: int | None = None,
    families: list[str] | None = None,
    max_trials_per_family: int | None = None,
    folds: int | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """The sweep for the window ending at ``end_partition``: trials (as dicts) and the data they use."""
    cfg = spec.training
    days = window_days or cfg.window_days
    chosen = families or list(cfg.search_space)
    unknown = [f for f in chosen if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown model families {unknown}; expected some of {list(FAMILIES)}")
    ready = ready_partitions(spec, lake, window(end_partition, days))
    if end_partition not in ready:
        raise SweepNotReady(f"spec {spec.name!r}: partition {end_partition} is not in the lake")
    partitions = sorted(ready)
    if len(partitions) <= cfg.holdout_days:
        raise SweepNotReady(
            f"spec {spec.name!r}: {len(partitions)} usable partition(s) in the {days}-day window "
            f"ending {end_partition}; need more than holdout_days={cfg.holdout_days}"
        )
    train, holdout = partitions[: -cfg.holdout_days], partitions[-cfg.holdout_days :]
    limit = max_trials_per_family or cfg.max_trials_per_family
    points = [(f, p) for f in chosen if f in cfg.search_space for p in grid(cfg.search_space[f], limit)]
    if not points:
        raise ValueError(f"spec {spec.name!r}: none of the families {chosen} is in training.search_space")
    sweep_key = hashlib.sha256(
        json.dumps(
            {
                "spec": spec.fingerprint,
                "data": ready,
                "trainer": __version__,
                "points": points,
                "folds": folds or cfg.folds,
                "holdout": holdout,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:24]
    trials = [
        asdict(
            Trial(
                trial_id=f"{family}-{i}",
                family=family,
                params=params,
                train_partitions=train,
                holdout_partitions=holdout,
                folds=folds or cfg.folds,
                seed=cfg.seed,
                sweep_key=sweep_key,
                parent_run_id=parent_run_id,
                manifest_hashes=ready,
                resources=cfg.resources.get(family, TrialResources()).model_dump(),
            )
        )
        for family in chosen
        for i, params in enumerate(p for f, p in points if f == family)
    ]
    for trial in trials:
        trial["cache_key"] = trial_cache_key(spec, trial)
    log.info(
        "sweep %s: %d trials over %d training and %d holdout partitions (key %s)",
        spec.name,
        len(trials),
        len(train),
        len(holdout),
        sweep_key,
    )
    return {
        "sweep_key": sweep_key,
        "train_partitions": train,
        "holdout_partitions": holdout,
        "trials": trials,
    }
