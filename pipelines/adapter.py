"""The one adapter from a stage (``curate/stage.py``) to Ray Data.

Ray gets exactly the stage's placement on the cluster (``Stage.placement``): its CPUs, GPUs
and memory per worker, its rows per call, and an actor pool of ``workers`` actors when it is
stateful (a model loaded once per actor in ``setup()``), else tasks (at most ``workers`` at
once when it says so). The stage (its settings, not a loaded model) travels
to its workers through the object store, however large (a dedup stage holds the output
folder's signatures).
"""

from __future__ import annotations

import logging
from typing import Any

from curate.stage import Cluster, Placement, Stage
from pipelines import rows as R

log = logging.getLogger("kvid")


def ray_args(placement: Placement) -> dict[str, Any]:
    """The Ray resource arguments of one worker."""
    res = placement.resources
    args: dict[str, Any] = {"num_cpus": res.cpus, "num_gpus": res.gpus}
    if res.memory_bytes:
        args["memory"] = res.memory_bytes
    return args


def _run(stage: Stage, batch) -> dict[str, list]:
    rows = R.batch_to_dicts(batch)
    out = stage.process(rows)
    rejected = sum(1 for r in out if r.get("status") == "rejected" and r.get("reject_stage") == stage.name)
    log.debug("%s: %d rows in, %d out, %d rejected here", stage.name, len(rows), len(out), rejected)
    return R.dicts_to_batch(out)


class StageActor:
    """One long-lived worker of a stateful stage: ``setup()`` once, then batches."""

    def __init__(self, stage: Stage):
        self.stage = stage
        stage.setup()

    def __call__(self, batch) -> dict[str, list]:
        return _run(self.stage, batch)


def add_stage(ds, stage: Stage, cluster: Cluster):
    """``ds`` with ``stage`` applied, placed as it says for ``cluster``."""
    import ray

    placement = stage.placement(cluster)
    common = {"batch_size": placement.rows_per_call, "batch_format": "pyarrow", **ray_args(placement)}
    # Ray names an operator, and the processes that run it (`ray::MapBatches(transcode)` in
    # ps and the dashboard), after its function or class: name them after the stage.
    if stage.stateful:
        actor = type(stage.name, (StageActor,), {})
        return ds.map_batches(actor, fn_constructor_kwargs={"stage": stage},
                              compute=ray.data.ActorPoolStrategy(size=placement.workers or 1), **common)

    def run_stage(batch, stage: Stage = stage) -> dict[str, list]:
        return _run(stage, batch)

    run_stage.__name__ = run_stage.__qualname__ = stage.name
    compute = ray.data.TaskPoolStrategy(size=placement.workers) if placement.workers else None
    return ds.map_batches(run_stage, compute=compute, **common)
