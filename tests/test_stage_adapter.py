"""The one Ray adapter: a stage gets exactly the resources it declares, and a new stage is
a class, not edits across the pipeline."""

from __future__ import annotations

import dataclasses

import pytest

from curate.schema import ClipRecord
from curate.stage import Cluster, Placement, Resources, Stage
from pipelines import rows as R
from pipelines.adapter import add_stage, ray_args


class AssignedResources(Stage):
    """Records, on each row, what Ray assigned to the worker that processed it."""

    name = "probe_resources"

    def __init__(self, resources: Resources, stateful: bool):
        self.resources = resources
        self.stateful = stateful  # type: ignore[misc]
        self.setups = 0

    def placement(self, cluster: Cluster) -> Placement:
        return Placement(self.resources, rows_per_call=2, workers=2)

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


CPU_ONLY = Cluster(cpus=2)
WITH_GPUS = Cluster(cpus=16, gpus=2)


@pytest.mark.parametrize("stateful", [False, True])
def test_ray_gets_exactly_what_a_stage_places(ray_local, stateful):
    stage = AssignedResources(Resources(cpus=0.5, memory_bytes=64 * 2**20), stateful=stateful)
    placement = stage.placement(CPU_ONLY)
    assert ray_args(placement) == {"num_cpus": 0.5, "num_gpus": 0.0, "memory": 64 * 2**20}
    ds = add_stage(ray_local.data.from_items(_rows(6)), stage, CPU_ONLY)
    out = [R.row_record(r).caption.split("|") for r in ds.take_all()]
    assert len(out) == 6
    assert {float(cpu) for cpu, *_ in out} == {0.5}  # what it declared, not Ray's default of 1
    assert {float(gpu) for _, gpu, *_ in out} == {0.0}
    assert all(int(n) <= placement.rows_per_call for *_, n in out)
    if stateful:
        # An actor pool of the declared size; setup() ran once in each actor before its batches.
        pids = {pid for *_, pid, _ in out}
        assert 1 <= len(pids) <= placement.workers
        assert {setups for _, _, setups, _, _ in out} == {"1"}
    else:
        assert {setups for _, _, setups, _, _ in out} == {"0"}  # tasks load nothing


def test_curate_stages_place_themselves():
    from curate.video_stages import AnalyzeStage, CurateParams, PlanStage, TranscodeStage

    p = CurateParams(workers=3)
    stages = PlanStage(p), AnalyzeStage(p), TranscodeStage(p)
    assert not any(s.stateful for s in stages)
    placed = [s.placement(CPU_ONLY) for s in stages]
    # Different memory requests keep Ray from fusing analysis and transcode into one task,
    # with transitions on (the default) or off.
    assert len({pl.resources.memory_bytes for pl in placed}) == 3
    plain = CurateParams(analysis=dataclasses.replace(
        p.analysis, transition=dataclasses.replace(p.analysis.transition, enabled=False)))
    assert p.analysis.transition.enabled
    assert len({placed[0].resources.memory_bytes, AnalyzeStage(plain).placement(CPU_ONLY).resources.memory_bytes,
                placed[2].resources.memory_bytes}) == 3
    assert {pl.workers for pl in placed} == {3}  # --workers caps the parallel tasks
    assert ray_args(placed[2])["num_cpus"] == 1 and ray_args(placed[2])["memory"] == placed[2].resources.memory_bytes


def test_model_stages_place_themselves_for_the_cluster():
    """A stage's setting comes from the config key of its name; where and how many of it run
    depends on the cluster it is given, not on the machine that builds it."""
    from pipelines.config import CurateConfig
    from pipelines.graph import model_stages

    cfg = CurateConfig(motion_backend="raft", motion_size=128, motion_stride=2, motion_batch_size=7, caption_batch_size=3,
                       caption_model="some/model")
    settings = cfg.settings()
    motion, caption = settings.motion, settings.caption
    assert (motion.backend, motion.size, motion.stride, motion.batch_size) == ("raft_large", 128, 2, 7)
    assert caption.batch_size == 3 and caption.model == "some/model"

    on_cpus, on_gpus = motion.placement(CPU_ONLY), motion.placement(WITH_GPUS)
    assert on_cpus.resources.gpus == 0 and on_cpus.workers == 1 and on_cpus.resources.cpus <= CPU_ONLY.cpus / 4
    assert on_gpus.resources.gpus == 1 and on_gpus.workers == 2  # one RAFT actor per GPU
    assert on_gpus.rows_per_call > on_cpus.rows_per_call  # clips batch across a call on a GPU
    dis = CurateConfig(motion_backend="dis").settings().motion
    assert dis.placement(WITH_GPUS).resources.gpus == 0  # OpenCV flow never asks for a GPU
    cap_cpu, cap_gpu = caption.placement(CPU_ONLY), caption.placement(WITH_GPUS)
    assert (cap_cpu.resources.gpus, cap_cpu.workers, cap_cpu.rows_per_call) == (0, 1, 3)
    assert (cap_gpu.resources.gpus, cap_gpu.workers) == (1, 2)
    assert CurateConfig(caption_device="cpu").settings().caption.placement(WITH_GPUS).resources.gpus == 0
    # Motion off, captions off: no model stage.
    assert model_stages(CurateConfig(motion_backend="none", caption_model="none").settings()) == []
