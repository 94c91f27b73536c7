"""The specs folder as an Airflow DAG bundle: one DAG file per spec.

Airflow records an import error per DAG *file*, and marks every DAG of a file with an import error
stale. With every spec's DAGs in one file, one team's typo took every team's pipelines off the
scheduler. This bundle gives each spec a file of its own: for each ``<name>.yaml`` in the specs folder
it keeps a three-line loader ``<name>.py`` in the bundle's folder, which builds that spec's DAGs and
nothing else. So a malformed spec is an import error of its own file, naming the spec file and every
bad field, and the other specs' DAGs stay active; fixing the spec brings its DAGs back at the next
parse (the loader is rewritten when its spec changes, which the DAG processor sees within its
refresh interval); deleting the spec deletes its loader, which retires its DAGs alone.

Configured beside Airflow's own dags-folder bundle (``[dag_processor] dag_bundle_config_list``; the
image sets it, and :func:`cormorant.config.dag_bundles` writes it)::

    {"name": "cormorant-specs", "classpath": "cormorant_provider.bundle.SpecBundle",
     "kwargs": {"refresh_interval": 10}}

The DAG processor refreshes the bundle on its interval; a worker initializes it before running a task,
so both write the same loaders from the same specs (the write is atomic and idempotent).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from airflow.dag_processing.bundles.base import BaseDagBundle

BUNDLE_NAME = "cormorant-specs"
SPEC_SUFFIXES = (".yaml", ".yml")
LOADER_TEMPLATE = '''"""The DAGs of the Cormorant spec {name!r}: {spec_file} in the specs folder.

Written by the {bundle} DAG bundle (cormorant_provider.bundle.SpecBundle), one such file per spec, so
that a malformed spec is an Airflow import error of its own and the other specs' DAGs keep running.
Edit the spec, not this file: it is rewritten whenever the spec changes (spec sha256 {digest}).
"""

from cormorant_provider.dag_factory import spec_dags

globals().update(spec_dags({spec_path!r}))
'''


def loader_name(spec_path: Path) -> str:
    """The loader's file name for a spec file: its stem as a Python identifier (``.yml`` files get a
    suffix, so that ``churn.yaml`` and ``churn.yml`` keep a loader each: the second one's is an
    import error naming both)."""
    stem = re.sub(r"\W", "_", spec_path.stem)
    return f"{stem}.py" if spec_path.suffix == ".yaml" else f"{stem}__yml.py"


def spec_files(specs: Path) -> list[Path]:
    """The spec files a specs location names: every ``*.yaml`` and ``*.yml`` in a folder, or one file."""
    if specs.is_file():
        return [specs]
    return sorted(p for p in specs.glob("*") if p.suffix in SPEC_SUFFIXES and p.is_file())


def sync_loaders(specs: Path, folder: Path) -> dict[str, Path]:
    """Make ``folder`` hold exactly one loader per spec file in ``specs``: new and changed specs get
    theirs (written to a temporary file and renamed, so a parser never reads half a file), and the
    loaders of deleted specs are removed. Returns the loaders by file name."""
    if not specs.exists():  # a folder not mounted (yet) is not a folder emptied: keep every loader
        raise FileNotFoundError(f"the specs folder {specs} (CORMORANT_SPECS_DIR) does not exist")
    folder.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Path] = {}
    for spec_path in spec_files(specs):
        try:
            digest = hashlib.sha256(spec_path.read_bytes()).hexdigest()
        except OSError:  # deleted, or unreadable, since the listing: the loader will say which
            digest = "unreadable"
        text = LOADER_TEMPLATE.format(
            name=spec_path.stem,
            spec_file=spec_path.name,
            bundle=BUNDLE_NAME,
            digest=digest,
            spec_path=str(spec_path.resolve()),
        )
        loader = folder / loader_name(spec_path)
        wanted[loader.name] = loader
        if not loader.exists() or loader.read_text() != text:
            _write_atomically(loader, text)
    for stale in folder.glob("*.py"):
        if stale.name not in wanted:
            stale.unlink(missing_ok=True)
    return wanted


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SpecBundle(BaseDagBundle):
    """Cormorant's specs as a DAG bundle: one loader file per spec (see the module docstring).

    :param specs: the specs folder, or one spec file (``cormorant run`` bundles just its spec); default
        ``$CORMORANT_SPECS_DIR``.
    :param path: where the loaders are kept; default a folder of the bundle's own under Airflow's
        bundle storage (``[dag_processor] dag_bundle_storage_path``).
    """

    supports_versioning = False

    def __init__(self, *, specs: str | None = None, path: str | None = None, **kwargs) -> None:
        from cormorant.config import Settings

        kwargs.setdefault("name", BUNDLE_NAME)
        super().__init__(**kwargs)
        self.specs = Path(specs) if specs else Path(Settings.from_env().specs_dir)
        self._path = Path(path) if path else self.base_dir / "loaders"

    @property
    def path(self) -> Path:
        return self._path

    def get_current_version(self) -> None:
        return None

    def initialize(self) -> None:
        self.refresh()
        super().initialize()

    def refresh(self) -> None:
        sync_loaders(self.specs, self._path)
