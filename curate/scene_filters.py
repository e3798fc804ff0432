"""The per-scene filters of the analysis decode, in the order they decide (cheapest first).

Each filter is one module (``curate/filter_<name>.py``): a ``FrameFeature``
(curate/scene_features.py) that measures frames during the decode and sums them up per
scene, its parameters (a dataclass with an ``enabled`` switch and thresholds, each declared
with ``curate.settings.setting``) and ``check(stats, params)``, the keep/drop decision.
Adding one = its file and one line in ``SCENE_FILTERS``: ``SceneFilterParams`` gets a group
for its parameters, so they become config keys and flags like every other setting. The
statistics are stored on the scene's record, kept or rejected, under the filter's name as
prefix; its name is also its reject reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from curate import filter_flat, filter_static, filter_text, schema
from curate.filters import Rejection
from curate.settings import group


@dataclass(frozen=True)
class SceneFilter:
    name: str  # its one name: the prefix of its statistics, its field in SceneFilterParams, its reject reason
    reason: str  # the reject reason its check gives (the name, as a schema constant)
    params: type  # its parameter dataclass
    feature: Callable[[Any], Any]  # params -> a FrameFeature, one per unit of work
    check: Callable[[dict[str, Any], Any], Rejection | None]
    frames: str = "analysis"  # "analysis": every small BGR frame; "full": the full-resolution luma samples
    # Costly: measured only for scenes every other filter kept, by the stage, as
    # ``scene_stats(start, end, crop)`` with the scene's crop (x, y, w, h) in source pixels.
    deferred: bool = False


SCENE_FILTERS: tuple[SceneFilter, ...] = (
    # flat before static: a uniform field is also static
    SceneFilter("flat", schema.REASON_FLAT, filter_flat.FlatParams, filter_flat.FlatFeature, filter_flat.check),
    SceneFilter("static", schema.REASON_STATIC, filter_static.StaticParams, filter_static.StaticFeature, filter_static.check),
    SceneFilter("text", schema.REASON_TEXT, filter_text.TextParams, filter_text.TextAreaFeature, filter_text.check,
                frames="full", deferred=True),
)


def _params_class() -> type:
    """One field per registered filter, holding its parameters (``params.of(f)``). Each is a
    settings group: the filter's settings are config keys, as declared in its file."""
    fields = [(f.name, f.params, group(f.params, title="per-scene filters")) for f in SCENE_FILTERS]
    cls = dataclasses.make_dataclass("SceneFilterParams", fields, frozen=True, namespace={
        "__doc__": "The parameters of every registered per-scene filter, by its name (a filter not given keeps its defaults).",
        "enabled": lambda self: [f for f in SCENE_FILTERS if self.of(f).enabled],
        "of": lambda self, f: getattr(self, f.name),
    })
    cls.__module__ = __name__
    return cls


if TYPE_CHECKING:
    class SceneFilterParams:  # what a type checker sees of the generated class
        def __init__(self, **by_name: Any) -> None: ...
        def enabled(self) -> list[SceneFilter]: ...
        def of(self, f: SceneFilter) -> Any: ...
else:
    SceneFilterParams = _params_class()


def check_stats(stats: dict[str, Any], params: SceneFilterParams, deferred: bool) -> Rejection | None:
    """The first failing decision among the enabled (non-)deferred filters, or None."""
    for f in params.enabled():
        if f.deferred == deferred:
            rejection = f.check(stats, params.of(f))
            if rejection:
                return rejection
    return None
