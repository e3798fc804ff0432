"""The stage interface: one class per job of the pipeline, runnable without Ray.

A stage says how it runs on a given cluster (``placement(cluster)``: what one of its workers
holds, how many rows it takes per call, how many workers) and whether it holds a model
(``stateful``: loaded once per worker in ``setup()``, so the adapter runs it as an actor
pool; otherwise as tasks). Its settings are its own (``curate/settings.py``). ``process``
maps rows to rows. A row is a clip record as a dict (``curate/schema.py``'s columns) plus what
travels beside it: ``"mp4"`` (the clip's bytes) and stage-to-stage items such as ``"unit"``
(the work unit a scene belongs to) or sampled caption frames. A row that fails becomes a
reject row (``status``/``reject_stage``/``reject_reason``); ``process`` does not raise for
one bad input.

``pipelines/adapter.py`` is the one place that turns a stage into Ray work, from exactly
its placement; tests and notebooks call ``setup()`` and ``process()`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

Row = dict[str, Any]
# An encode group row carries its kept scenes' rows under this key, beside its "unit"
# (analysis -> dedup -> transcode).
SCENES = "scenes"


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage holds while it runs."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_bytes: int = 0  # 0: not declared


@dataclass(frozen=True)
class Cluster:
    """What the stages share: the CPUs and GPUs of the cluster (Ray's view of it)."""

    cpus: float
    gpus: int = 0

    def actor_cpus(self, wanted: float) -> float:
        """CPUs an actor asks for. Actors hold their CPUs for the whole run, so on a small
        machine full requests from three pools would leave no CPU for the decode/encode tasks
        (or never schedule at all): each gets at most a quarter of the cluster."""
        return max(0.25, min(float(wanted), self.cpus / 4))

    def on_gpu(self, device: str) -> bool:
        """Whether a stage whose device setting is ``device`` runs on a GPU of this cluster."""
        return device != "cpu" and self.gpus > 0


@dataclass(frozen=True)
class Placement:
    """How a stage runs on a cluster."""

    resources: Resources = Resources()  # what one worker (task or actor) holds
    # Rows handed to one ``process`` call (a stage may batch its own work inside, frame pairs say).
    rows_per_call: int = 1
    # A stateful stage: the actors of its pool. A stateless one: at most this many tasks at
    # once (None: as many as the resources allow).
    workers: int | None = None


class Stage:
    name: ClassVar[str] = "stage"
    stateful: ClassVar[bool] = False  # holds a model: an actor pool, setup() once per actor

    def placement(self, cluster: Cluster) -> Placement:
        """How this stage runs on ``cluster``: one CPU per task unless the stage says otherwise."""
        return Placement(Resources(cpus=1.0), workers=1 if self.stateful else None)

    def setup(self) -> None:
        """Load what the stage needs, once per worker (model weights)."""

    def process(self, rows: list[Row]) -> list[Row]:
        raise NotImplementedError

    def __call__(self, rows: list[Row]) -> list[Row]:
        return self.process(list(rows))
