"""The one kvid version string, from the installed distribution (a bare source tree says so)."""

from __future__ import annotations

import importlib.metadata

try:
    KVID_VERSION = importlib.metadata.version("kvid")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    KVID_VERSION = "0.0.0+src"
