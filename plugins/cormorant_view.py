"""The Cormorant view in the Airflow UI. Airflow loads this file as a plugin (the rest of the plugins
folder is a library: see .airflowignore); the plugin is ``cormorant_provider.view.CormorantViewPlugin``."""

from __future__ import annotations

from cormorant_provider.view import CormorantViewPlugin

__all__ = ["CormorantViewPlugin"]
