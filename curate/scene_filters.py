"""The per-scene filters of the analysis decode, in the order they decide (cheapest first).

Each filter is one module: a ``FrameFeature`` (curate/scene_features.py) that measures
frames during the decode and sums them up per scene, its parameters (a dataclass with an
``enabled`` switch and thresholds, each declared with ``curate.filters.setting``: default,
help, bounds, config key) and ``check(stats, params)``, the keep/drop decision. Adding one =
its file and one line in ``SCENE_FILTERS``: its config keys and flags come from its
parameters (pipelines/config.py reads ``settings()``). The statistics are stored on the
scene's record, kept or rejected, under the filter's name as prefix.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from curate import flatness, schema, stillness, text_area
from curate.filters import Rejection


@dataclass(frozen=True)
class SceneFilter:
    name: str  # the prefix of its statistics, and its name in SceneFilterParams
    reason: str  # the reject reason its check gives
    params: type  # its parameter dataclass
    feature: Callable[[Any], Any]  # params -> a FrameFeature, one per unit of work
    check: Callable[[dict[str, Any], Any], Rejection | None]
    frames: str = "analysis"  # "analysis": every small BGR frame; "full": the full-resolution luma samples
    # Costly: measured only for scenes every other filter kept, by the stage, as
    # ``scene_stats(start, end, crop)`` with the scene's crop (x, y, w, h) in source pixels.
    deferred: bool = False


SCENE_FILTERS: tuple[SceneFilter, ...] = (
    # flat before still: a uniform field is also still
    SceneFilter("flat", schema.REASON_FLAT, flatness.FlatParams, flatness.FlatFeature, flatness.check),
    SceneFilter("still", schema.REASON_STATIC, stillness.StillParams, stillness.StillFeature, stillness.check),
    SceneFilter("text", schema.REASON_TEXT, text_area.TextParams, text_area.TextAreaFeature, text_area.check,
                frames="full", deferred=True),
)


@dataclass(frozen=True)
class Setting:
    """One filter parameter that is a config key: ``key`` (YAML) and ``--key-with-dashes``."""

    key: str
    filter: SceneFilter
    name: str  # the field of the filter's parameters
    type: Any
    default: Any
    help: str
    bounds: Mapping[str, float]


def settings() -> Iterator[Setting]:
    """Every filter parameter declared with ``setting()``, in registry order."""
    for f in SCENE_FILTERS:
        types = typing.get_type_hints(f.params)
        for p in dataclasses.fields(f.params):
            if "help" in p.metadata:
                yield Setting(p.metadata["key"] or p.name, f, p.name, types[p.name], p.default,
                              p.metadata["help"], p.metadata["bounds"])


class SceneFilterParams:
    """The parameters of every registered filter, by its name (``params.of(f)``); a filter not
    given keeps its defaults."""

    def __init__(self, **by_name: Any):
        unknown = sorted(set(by_name) - {f.name for f in SCENE_FILTERS})
        if unknown:
            raise TypeError(f"unknown scene filter {', '.join(unknown)}; registered: "
                            f"{', '.join(f.name for f in SCENE_FILTERS)}")
        self.by_name = {f.name: by_name.get(f.name) or f.params() for f in SCENE_FILTERS}

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> SceneFilterParams:
        """From config values by setting key (keys not in ``values`` keep their defaults)."""
        kwargs: dict[str, dict[str, Any]] = {f.name: {} for f in SCENE_FILTERS}
        for s in settings():
            if s.key in values:
                kwargs[s.filter.name][s.name] = values[s.key]
        return cls(**{f.name: f.params(**kwargs[f.name]) for f in SCENE_FILTERS})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SceneFilterParams) and other.by_name == self.by_name

    def __hash__(self) -> int:
        return hash(tuple(self.by_name.items()))

    def __repr__(self) -> str:
        return f"SceneFilterParams({', '.join(f'{k}={v!r}' for k, v in self.by_name.items())})"

    def enabled(self) -> list[SceneFilter]:
        return [f for f in SCENE_FILTERS if self.of(f).enabled]

    def of(self, f: SceneFilter) -> Any:
        return self.by_name[f.name]


def check_stats(stats: dict[str, Any], params: SceneFilterParams, deferred: bool) -> Rejection | None:
    """The first failing decision among the enabled (non-)deferred filters, or None."""
    for f in params.enabled():
        if f.deferred == deferred:
            rejection = f.check(stats, params.of(f))
            if rejection:
                return rejection
    return None
