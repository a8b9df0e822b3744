"""The control plane's one version number: the ``infra-control-plane`` package's, read once at import.

The OpenAPI schema (``SPECTACULAR_SETTINGS``) and ``/health/`` both report this value.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path


def _package_version() -> str:
    """The installed package's version, else the repository's pyproject (a checkout run in place)."""
    try:
        return importlib.metadata.version("infra-control-plane")
    except importlib.metadata.PackageNotFoundError:
        with (Path(__file__).resolve().parent.parent / "pyproject.toml").open("rb") as pyproject:
            return tomllib.load(pyproject)["project"]["version"]


__version__ = _package_version()
