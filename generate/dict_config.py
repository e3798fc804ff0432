"""JSON round trip shared by the component config dataclasses (U-Nets, MoVQ, text encoder)."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any


class DictConfig:
    """``to_dict`` / ``from_dict`` for a config dataclass.

    Tuples are written as lists (JSON has no tuples; each config turns them back in its
    ``__post_init__``). Unknown keys are an error rather than ignored, so a typo in a saved
    config does not silently fall back to a default.
    """

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
        return cls(**d)
