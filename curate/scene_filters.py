"""The per-scene filters of the analysis decode, in the order they decide (cheapest first).

Each filter is one module: a ``FrameFeature`` (curate/scene_features.py) that measures
frames during the decode and sums them up per scene, its parameters (a dataclass with an
``enabled`` switch and thresholds) and ``check(stats, params)``, the keep/drop decision.
Adding one = its file, one line in ``SCENE_FILTERS`` and one field in ``SceneFilterParams``
(plus its keys in pipelines/config.py). The statistics are stored on the scene's record,
kept or rejected, under the filter's name as prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from curate import flatness, stillness, text_area
from curate.filters import Rejection


@dataclass(frozen=True)
class SceneFilter:
    name: str  # its field in SceneFilterParams and the prefix of its statistics
    feature: Callable[[Any], Any]  # params -> a FrameFeature, one per unit of work
    check: Callable[[dict[str, Any], Any], Rejection | None]
    frames: str = "analysis"  # "analysis": every small BGR frame; "full": the full-resolution luma samples
    # Costly: measured only for scenes every other filter kept, by the stage, as
    # ``scene_stats(start, end, crop)`` with the scene's crop (x, y, w, h) in source pixels.
    deferred: bool = False


SCENE_FILTERS: tuple[SceneFilter, ...] = (
    SceneFilter("flat", flatness.FlatFeature, flatness.check),  # before still: a uniform field is also still
    SceneFilter("still", stillness.StillFeature, stillness.check),
    SceneFilter("text", text_area.TextAreaFeature, text_area.check, frames="full", deferred=True),
)


@dataclass(frozen=True)
class SceneFilterParams:
    flat: flatness.FlatParams = field(default_factory=flatness.FlatParams)
    still: stillness.StillParams = field(default_factory=stillness.StillParams)
    text: text_area.TextParams = field(default_factory=text_area.TextParams)

    def enabled(self) -> list[SceneFilter]:
        return [f for f in SCENE_FILTERS if getattr(self, f.name).enabled]

    def of(self, f: SceneFilter) -> Any:
        return getattr(self, f.name)


def check_stats(stats: dict[str, Any], params: SceneFilterParams, deferred: bool) -> Rejection | None:
    """The first failing decision among the enabled (non-)deferred filters, or None."""
    for f in params.enabled():
        if f.deferred == deferred:
            rejection = f.check(stats, params.of(f))
            if rejection:
                return rejection
    return None
