"""The one Ray adapter: a stage gets exactly the resources it declares, and a new stage is
a class, not edits across the pipeline."""

from __future__ import annotations

import dataclasses

import pytest

from curate.schema import ClipRecord
from curate.stage import Resources, Stage
from pipelines import rows as R
from pipelines.adapter import add_stage, ray_args


class AssignedResources(Stage):
    """Records, on each row, what Ray assigned to the worker that processed it."""

    name = "probe_resources"

    def __init__(self, resources: Resources, stateful: bool):
        self.resources = resources
        self.stateful = stateful  # type: ignore[misc]
        self.workers = 2
        self.rows_per_call = 2
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def process(self, rows):
        import os

        import ray

        assigned = ray.get_runtime_context().get_assigned_resources()
        return [{**r, "caption": f"{assigned.get('CPU', 0)}|{assigned.get('GPU', 0)}|{self.setups}|{os.getpid()}|{len(rows)}"}
                for r in rows]


def _rows(n: int) -> list[dict]:
    return [R.record_row(ClipRecord(clip_id=f"c{i}")) for i in range(n)]


@pytest.mark.parametrize("stateful", [False, True])
def test_ray_gets_exactly_what_a_stage_declares(ray_local, stateful):
    stage = AssignedResources(Resources(cpus=0.5, memory_bytes=64 * 2**20), stateful=stateful)
    assert ray_args(stage) == {"num_cpus": 0.5, "num_gpus": 0.0, "memory": 64 * 2**20}
    ds = add_stage(ray_local.data.from_items(_rows(6)), stage)
    out = [R.row_record(r).caption.split("|") for r in ds.take_all()]
    assert len(out) == 6
    assert {float(cpu) for cpu, *_ in out} == {0.5}  # what it declared, not Ray's default of 1
    assert {float(gpu) for _, gpu, *_ in out} == {0.0}
    assert all(int(n) <= stage.rows_per_call for *_, n in out)
    if stateful:
        # An actor pool of the declared size; setup() ran once in each actor before its batches.
        pids = {pid for *_, pid, _ in out}
        assert 1 <= len(pids) <= stage.workers
        assert {setups for _, _, setups, _, _ in out} == {"1"}
    else:
        assert {setups for _, _, setups, _, _ in out} == {"0"}  # tasks load nothing


def test_curate_stages_declare_their_resources():
    from curate.stages import AnalyzeStage, CurateParams, PlanStage, TranscodeStage

    p = CurateParams()
    plan, analyze, transcode = PlanStage(p), AnalyzeStage(p), TranscodeStage(p)
    assert not any(s.stateful for s in (plan, analyze, transcode))
    # Different memory requests keep Ray from fusing analysis and transcode into one task,
    # with transitions on (the default) or off.
    assert len({s.resources.memory_bytes for s in (plan, analyze, transcode)}) == 3
    plain = CurateParams(analysis=dataclasses.replace(p.analysis, transitions=False))
    assert p.analysis.transitions and len({s.resources.memory_bytes for s in (plan, AnalyzeStage(plain), transcode)}) == 3
    assert ray_args(transcode)["num_cpus"] == 1 and ray_args(transcode)["memory"] == transcode.resources.memory_bytes


def test_model_stages_take_their_settings_from_the_config():
    """Each stage setting comes from the config key of its name, and the rows a call takes
    (the adapter's batch) never overwrite a stage's own batch (frame pairs, clips)."""
    from pipelines.config import CurateConfig
    from pipelines.graph import caption_stage, motion_stage

    cfg = CurateConfig(motion_backend="dis", motion_size=128, motion_stride=2, motion_batch_size=7, caption_batch_size=3)
    motion = motion_stage(cfg)
    assert (motion.backend_name, motion.size, motion.stride, motion.batch_size) == ("dis", 128, 2, 7)
    assert motion.stateful and motion.rows_per_call == 2 and motion.workers >= 1
    caption = caption_stage(cfg)
    assert caption.batch_size == 3 == caption.rows_per_call and caption.model == cfg.caption_model
