"""Cormorant's plain library: the logic behind every pipeline stage, with no Airflow import.

Operators in ``plugins/cormorant_provider`` are thin shells over these modules, and the trainer CLI
(``python -m cormorant.trainer``) runs the same code in a Kubernetes pod or a local subprocess.
"""

from __future__ import annotations

__version__ = "0.1.0"
