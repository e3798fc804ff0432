"""The stage interface: one class per job of the pipeline, runnable without Ray.

A stage declares what one of its workers needs (``resources``), how many rows it takes per
call (``rows_per_call``) and whether it holds a model (``stateful``: loaded once per worker in
``setup()``, so the adapter runs it as an actor pool; otherwise as tasks). ``process`` maps
rows to rows. A row is a clip record as a dict (``curate/schema.py``'s columns) plus what
travels beside it: ``"mp4"`` (the clip's bytes) and stage-to-stage items such as ``"unit"``
(the work unit a scene belongs to) or sampled caption frames. A row that fails becomes a
reject row (``status``/``reject_stage``/``reject_reason``); ``process`` does not raise for
one bad input.

``pipelines/adapter.py`` is the one place that turns a stage into Ray work, from exactly
these declarations; tests and notebooks call ``setup()`` and ``process()`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

Row = dict[str, Any]


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage holds while it runs."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_bytes: int = 0  # 0: not declared


class Stage:
    name: ClassVar[str] = "stage"
    stateful: ClassVar[bool] = False  # holds a model: an actor pool, setup() once per actor
    resources: Resources = Resources()
    rows_per_call: int = 1  # not ``batch_size``: a stage may batch its own work (frame pairs, say)
    workers: int | None = None  # actors of a stateful stage (None: the adapter's default)

    def setup(self) -> None:
        """Load what the stage needs, once per worker (model weights)."""

    def process(self, rows: list[Row]) -> list[Row]:
        raise NotImplementedError

    def __call__(self, rows: list[Row]) -> list[Row]:
        return self.process(list(rows))
