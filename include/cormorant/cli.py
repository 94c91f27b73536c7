"""The ``cormorant`` command (installed by the project): ``check``, ``run`` and ``summary`` for one spec.

The command drives Airflow (``run`` executes the real DAGs), so it lives with the operators in
``plugins/cormorant_provider/cli.py``; this entry point only puts that folder on the path, as Airflow's
plugin loader and ``scripts/demo.py`` do, and hands over.
"""

from __future__ import annotations

import sys

from cormorant.config import PROJECT_ROOT


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(PROJECT_ROOT / "plugins"))
    from cormorant_provider.cli import main as run_cli

    return run_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
