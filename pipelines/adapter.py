"""The one adapter from a stage (``curate/stage.py``) to Ray Data.

Ray gets exactly the stage's placement on the cluster (``Stage.placement``): its CPUs, GPUs
and memory per worker, its rows per call, and an actor pool of ``workers`` actors when it is
stateful (a model loaded once per actor in ``setup()``), else tasks (at most ``workers`` at
once when it says so). The stage (its settings, not a loaded model) travels
to its workers through the object store, however large (a dedup stage holds the output
folder's signatures).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
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


def _cpu_seconds() -> tuple[float, float]:
    """(this process, its finished children: ffmpeg) CPU seconds, user + system."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def _run(stage: Stage, batch, timings: str | None) -> dict[str, list]:
    started, wall, (cpu, child_cpu) = time.time(), time.perf_counter(), _cpu_seconds()
    rows = R.batch_to_dicts(batch)
    out = stage.process(rows)
    rejected = sum(1 for r in out if r.get("status") == "rejected" and r.get("reject_stage") == stage.name)
    log.debug("%s: %d rows in, %d out, %d rejected here", stage.name, len(rows), len(out), rejected)
    if timings:
        cpu_now, child_now = _cpu_seconds()
        line = {"stage": stage.name, "rows": len(rows), "start": started, "pid": os.getpid(),
                "wall_s": time.perf_counter() - wall,
                "cpu_s": cpu_now - cpu, "tool_cpu_s": child_now - child_cpu}
        # One short line, one write: appends of this size do not interleave.
        with open(timings, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
    return R.dicts_to_batch(out)


def stage_times(timings: str) -> dict[str, dict[str, float]]:
    """Per stage: calls, rows, wall seconds, CPU seconds of its workers and of the tools they ran."""
    by_stage: dict[str, dict[str, float]] = {}
    if not os.path.exists(timings):
        return by_stage
    with open(timings, encoding="utf-8") as f:
        for line in f:
            try:
                t = json.loads(line)
            except ValueError:
                continue  # a line a killed worker left half written
            acc = by_stage.setdefault(t["stage"], {"calls": 0, "rows": 0, "wall_s": 0.0, "cpu_s": 0.0, "tool_cpu_s": 0.0})
            acc["calls"] += 1
            for k in ("rows", "wall_s", "cpu_s", "tool_cpu_s"):
                acc[k] += t[k]
    return {k: {n: round(v, 2) for n, v in acc.items()} for k, acc in by_stage.items()}


class StageActor:
    """One long-lived worker of a stateful stage: ``setup()`` once, then batches."""

    def __init__(self, stage: Stage, timings: str | None = None):
        self.stage = stage
        self.timings = timings
        stage.setup()

    def __call__(self, batch) -> dict[str, list]:
        return _run(self.stage, batch, self.timings)


def add_stage(ds, stage: Stage, cluster: Cluster, timings: str | None = None):
    """``ds`` with ``stage`` applied, placed as it says for ``cluster``. ``timings``: a file each
    call appends its time to (see ``stage_times``)."""
    import ray

    placement = stage.placement(cluster)
    common = {"batch_size": placement.rows_per_call, "batch_format": "pyarrow", **ray_args(placement)}
    # Ray names an operator, and the processes that run it (`ray::MapBatches(transcode)` in
    # ps and the dashboard), after its function or class: name them after the stage.
    if stage.stateful:
        actor = type(stage.name, (StageActor,), {})
        return ds.map_batches(actor, fn_constructor_kwargs={"stage": stage, "timings": timings},
                              compute=ray.data.ActorPoolStrategy(size=placement.workers or 1), **common)

    def run_stage(batch, stage: Stage = stage) -> dict[str, list]:
        return _run(stage, batch, timings)

    run_stage.__name__ = run_stage.__qualname__ = stage.name
    compute = ray.data.TaskPoolStrategy(size=placement.workers) if placement.workers else None
    return ds.map_batches(run_stage, compute=compute, **common)
