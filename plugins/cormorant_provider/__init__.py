"""Cormorant's Airflow layer: operators, assets and the DAG factory, thin shells over ``cormorant``."""

from __future__ import annotations
