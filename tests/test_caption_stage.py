"""The caption stages on real clip rows: prep (decode + sample) then generate + hygiene.

The real generate path runs through tiny random models (whose text is garbage, so those
clips become caption_failed rejects). For the happy path the backend's raw text is
replaced after the real generate ran, so cleaning and record filling are checked on
realistic answers.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from caption_fixtures import CLIP_FRAMES, make_row, sample_clips, tiny_model

from caption.errors import CaptionModelError
from caption.prompts import PromptError, get_template, prompt_hash
from caption.sampling import sample_frame_indices
from caption.stage import FRAMES_KEY, FRAMES_META_KEY, CaptionPrepStage, CaptionStage, needs_caption
from curate import schema
from curate.stage import Cluster, Resources

pytestmark = pytest.mark.usefixtures("one_torch_thread")


GOOD = {
    "a3": "The video shows a man in a blue jacket walking along a busy street while the camera tracks him.",
    "b25": "In this video, two dogs chase each other across a sunny park. The camera is static.",
    "c125": "**Caption:** A slow fade from black reveals a calm lake surrounded by pine trees.",
    "rot2": "A person holds a phone vertically while filming a narrow alley at dusk.",
}
CLEAN = {
    "a3": "A man in a blue jacket walking along a busy street while the camera tracks him.",
    "b25": "Two dogs chase each other across a sunny park. The camera is static.",
    "c125": "A slow fade from black reveals a calm lake surrounded by pine trees.",
    "rot2": "A person holds a phone vertically while filming a narrow alley at dusk.",
}


def _rows(names=("a3", "b25", "c125")):
    clips = sample_clips()
    return [make_row(clips[n], n) for n in names]


def _corrupt_row():
    return make_row(None, "corrupt", mp4=b"\x00\x00\x00\x18ftypmp42" + b"\x42" * 4000, width=228, height=128,
                    fps=24.0, num_frames=72, duration_s=3.0)


def _rejected_row():
    row = make_row(None, "early-reject")
    row.update(status=schema.STATUS_REJECTED, reject_stage=schema.STAGE_FILTER,
               reject_reason=schema.REASON_TOO_SHORT, error_message="0.4 s", duration_s=0.4)
    return row


class ScriptedBackend:
    """Wraps a real backend: runs its real generate, then returns scripted raw text."""

    def __init__(self, real, script: dict[str, str]):
        self.real = real
        self.script = script
        self.calls: list[tuple[list[str], list[str]]] = []
        self.family = real.family
        self.frame_short_side = real.frame_short_side
        self.last_num_output_tokens = 0

    def generate(self, batch, prompt, max_new_tokens):
        raw = self.real.generate(batch, prompt, max_new_tokens)
        assert len(raw) == len(batch)
        self.last_num_output_tokens = self.real.last_num_output_tokens
        self.calls.append(([c.clip_id for c in batch], list(prompt)))
        return [self.script[c.clip_id] for c in batch]

    def close(self):
        pass


class FakeBackend:
    """No model: scripted text; optionally fails for batches larger than one or for some clips."""

    family = None
    frame_short_side = 336
    last_num_output_tokens = 0

    def __init__(self, script, fail_batches_over=None, always_fail=()):
        self.script = script
        self.fail_batches_over = fail_batches_over
        self.always_fail = set(always_fail)
        self.calls = []

    def generate(self, batch, prompt, max_new_tokens):
        ids = [c.clip_id for c in batch]
        self.calls.append(ids)
        if self.fail_batches_over is not None and len(batch) > self.fail_batches_over:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.always_fail & set(ids):
            raise RuntimeError("CUDA out of memory (this clip alone)")
        self.last_num_output_tokens = 5 * len(batch)
        return [self.script[i] for i in ids]

    def close(self):
        pass


def _prepared(names=("a3", "b25", "c125"), **prep_kwargs):
    prep = CaptionPrepStage(**{"frames": 8, "short_side": 64, **prep_kwargs})
    return prep(_rows(names))


# --------------------------------------------------------------------------- prep


def test_prep_samples_frames_and_rejects_bad_clips():
    rows = _rows(("a3", "c125", "rot2")) + [_corrupt_row(), _rejected_row(), make_row(None, "no-bytes")]
    before_rejected = copy.deepcopy(rows[4])
    prep = CaptionPrepStage(frames=8, short_side=64)
    assert prep.placement(Cluster(cpus=8, gpus=1)).resources == Resources(cpus=1, gpus=0)  # a CPU stage
    out = prep(rows)
    assert [r["clip_id"] for r in out] == ["a3", "c125", "rot2", "corrupt", "early-reject", "no-bytes"]
    for row in out[:3]:
        frames = row[FRAMES_KEY]
        assert isinstance(frames, np.ndarray) and frames.dtype == np.uint8
        assert frames.shape[0] == 8 and frames.shape[-1] == 3 and min(frames.shape[1:3]) == 64
        meta = row[FRAMES_META_KEY]
        assert meta["total_frames"] == CLIP_FRAMES[row["clip_id"]]
        assert meta["frame_indices"] == sample_frame_indices(CLIP_FRAMES[row["clip_id"]], n=8)
        assert row["status"] == "ok"
    assert out[2][FRAMES_KEY].shape[1] > out[2][FRAMES_KEY].shape[2]  # portrait stays portrait
    for row in (out[3], out[5]):
        assert row["status"] == schema.STATUS_REJECTED
        assert row["reject_stage"] == schema.STAGE_CAPTION == "caption"
        assert row["reject_reason"] == schema.REASON_CAPTION_FAILED == "caption_failed"
        assert row["error_message"].startswith("caption frames:")
        assert FRAMES_KEY not in row
    assert "decode failed" in out[3]["error_message"]
    assert out[4] == before_rejected  # other stages' rejects pass through untouched


@pytest.mark.parametrize("fps,expected", [(2.0, {"a3": 6, "b25": 5, "c125": 3}), (24.0, {"a3": 32, "b25": 32, "c125": 30})])
def test_prep_fps_mode_frame_counts(fps, expected):
    out = _prepared(frames=None, fps=fps)
    assert {r["clip_id"]: r[FRAMES_KEY].shape[0] for r in out} == expected


def test_prep_config_errors():
    with pytest.raises(ValueError, match="not both"):
        CaptionPrepStage(frames=8, fps=2)
    with pytest.raises(ValueError):
        CaptionPrepStage(frames=0)
    with pytest.raises(ValueError):
        CaptionPrepStage(short_side=4)


# --------------------------------------------------------------------------- full stage, real models


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_next_video"])
def test_full_stage_random_model_output_is_rejected_not_stored(family):
    model = tiny_model(family)
    rows = _prepared(("a3", "b25", "c125")) + [_rejected_row()]
    stage = CaptionStage(model=model, device="cpu", batch_size=2, max_new_tokens=8)
    assert stage.placement(Cluster(cpus=4)).resources == Resources(cpus=1, gpus=0)
    out = stage(rows)
    assert len(out) == 4
    for row in out[:3]:
        # a random model writes bytes, not a caption: caption_failed, never garbage in caption
        assert row["status"] == schema.STATUS_REJECTED
        assert row["reject_stage"] == "caption" and row["reject_reason"] == "caption_failed"
        assert row["caption"] is None
        assert "raw output:" in row["error_message"]
        assert row["caption_model"] == model
        assert row["caption_prompt_hash"] == get_template("detailed").hash
        assert FRAMES_KEY not in row and FRAMES_META_KEY not in row
    assert out[3]["reject_stage"] == schema.STAGE_FILTER  # untouched
    assert stage.stats["batches"] == 2 and stage.stats["clips"] == 3
    assert stage.stats["output_tokens"] > 0


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_full_stage_happy_path(family):
    model = tiny_model(family)
    template = "These are {num_frames} frames from a {duration_s} second clip. Describe it in one paragraph."
    stage = CaptionStage(model=model, prompt=template, device="cpu", batch_size=2, max_new_tokens=4)
    stage.setup()
    scripted = ScriptedBackend(stage.loaded, GOOD)
    stage.loaded = scripted
    rows = _prepared(("a3", "b25", "c125")) + [_corrupt_row()]
    rows = CaptionPrepStage(frames=8, short_side=64)(rows[3:]) + rows[:3]  # corrupt first
    out = stage(rows)
    by_id = {r["clip_id"]: r for r in out}
    for cid in ("a3", "b25", "c125"):
        row = by_id[cid]
        assert row["status"] == "ok", row["error_message"]
        assert row["caption"] == CLEAN[cid]
        assert row["caption_model"] == model
        assert row["caption_prompt_hash"] == prompt_hash(template)
        assert FRAMES_KEY not in row and FRAMES_META_KEY not in row
    assert by_id["corrupt"]["reject_reason"] == "caption_failed"
    # batches across clips, in order, of batch_size; prompts rendered per clip
    assert [c[0] for c in scripted.calls] == [["a3", "b25"], ["c125"]]
    assert scripted.calls[0][1] == [
        "These are 8 frames from a 3 second clip. Describe it in one paragraph.",
        "These are 8 frames from a 2.5 second clip. Describe it in one paragraph.",
    ]
    # the rows are valid clip records (the lead writes them to the index)
    table = schema.records_to_table([{k: v for k, v in r.items() if k != "mp4"} for r in out])
    assert table.num_rows == 4
    assert table.column("caption").to_pylist()[1:] == [CLEAN["a3"], CLEAN["b25"], CLEAN["c125"]]


def test_degenerate_outputs_become_rejects_with_raw_text():
    script = dict(GOOD)
    script["b25"] = "A dog runs. A dog runs. A dog runs. A dog runs."
    script["c125"] = "I'm sorry, but I cannot help with describing this video."
    stage = CaptionStage(model="some/model", device="cpu", batch_size=8)
    stage.loaded = FakeBackend(script)
    out = stage(_prepared())
    assert [r["status"] for r in out] == ["ok", "rejected", "rejected"]
    assert out[0]["caption"] == CLEAN["a3"]
    assert out[1]["error_message"].startswith("caption repetitive:")
    assert "A dog runs. A dog runs." in out[1]["error_message"]
    assert out[2]["error_message"].startswith("caption refusal:")
    assert all(r["caption_model"] == "some/model" for r in out)
    assert stage.stats["captioned"] == 1 and stage.stats["rejected"] == 2


def test_failed_batch_is_retried_clip_by_clip():
    stage = CaptionStage(model="some/model", device="cpu", batch_size=3)
    fake = FakeBackend(GOOD, fail_batches_over=1, always_fail={"b25"})
    stage.loaded = fake
    out = stage(_prepared())
    assert fake.calls == [["a3", "b25", "c125"], ["a3"], ["b25"], ["c125"]]
    assert [r["status"] for r in out] == ["ok", "rejected", "ok"]
    assert out[0]["caption"] == CLEAN["a3"] and out[2]["caption"] == CLEAN["c125"]
    assert out[1]["reject_reason"] == "caption_failed"
    assert "caption generation failed: RuntimeError: CUDA out of memory" in out[1]["error_message"]
    assert stage.stats["retried_batches"] == 1


def test_rows_without_prepared_frames_are_rejected():
    stage = CaptionStage(model="some/model", device="cpu")
    stage.loaded = FakeBackend(GOOD)
    rows = _rows(("a3",))  # prep stage skipped
    out = stage(rows)
    assert out[0]["reject_reason"] == "caption_failed"
    assert "CaptionPrepStage" in out[0]["error_message"]
    assert stage.loaded.calls == []


def test_stage_fails_fast_at_construction_and_setup(monkeypatch):
    with pytest.raises(PromptError):
        CaptionStage(model="some/model", prompt="Describe the {colour} of it.", device="cpu")
    with pytest.raises(ValueError):
        CaptionStage(model="some/model", batch_size=0, device="cpu")
    placed = CaptionStage(model="some/model", device="cuda").placement(Cluster(cpus=8, gpus=2))
    assert placed.resources.gpus == 1 and placed.workers == 2  # one actor per GPU; nothing loaded
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    stage = CaptionStage(model="kvid-test-org/missing-vlm", device="cpu")
    with pytest.raises(CaptionModelError, match="huggingface-cli download kvid-test-org/missing-vlm"):
        stage.setup()


def test_needs_caption_for_resume():
    row = {"caption": "A dog runs.", "caption_model": "m", "caption_prompt_hash": "h"}
    assert not needs_caption(row, "m", "h")
    assert needs_caption(row, "m", "other")
    assert needs_caption(row, "other", "h")
    assert needs_caption({**row, "caption": None}, "m", "h")
