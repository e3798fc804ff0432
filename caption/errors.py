"""The caption package's errors: each message names the model and the fix."""

from __future__ import annotations


class CaptionModelError(RuntimeError):
    """The caption model cannot be used (missing weights, unknown family, bad path)."""


class CaptionBackendUnavailable(CaptionModelError):
    """The requested backend's package is not installed."""
