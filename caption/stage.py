"""Caption pipeline stages: plain classes (no Ray), NeMo-Curator style.

``CaptionPrepStage`` (CPU): decode each ok clip once and sample the frames the VLM sees
(``row["caption_frames"]``, uint8 (T, H, W, 3), plus ``row["caption_frames_meta"]``).
``CaptionStage`` (GPU): ``setup()`` loads the model once per actor; ``__call__`` batches ok
rows across clips, generates, cleans (``caption.hygiene``) and fills ``caption``,
``caption_model`` and ``caption_prompt_hash``. Both remove nothing they did not add:
the caption stage drops the two frame keys from every row it returns.

Rows are dicts with the schema columns plus ``"mp4"`` (the clip's bytes). Rows whose
status is not "ok" pass through untouched. A clip that cannot be decoded, or whose caption
is degenerate, becomes a reject (stage "caption", reason "caption_failed") with the cause
and, for degenerate output, the raw text in ``error_message``. A failing batch (e.g. CUDA
out of memory) is retried clip by clip before anything is rejected.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from caption.backends import load_backend
from caption.hygiene import DEFAULT_MAX_CHARS, DEFAULT_MIN_WORDS, clean_caption
from caption.model_files import inspect_model
from caption.prompts import PromptTemplate, get_template
from caption.sampling import CLIP_FPS, DEFAULT_MAX_FRAMES, ClipFrames, sample_frames
from curate import schema
from curate.settings import CAPTIONS, check_device, setting
from curate.stage import Cluster, Placement, Resources, Stage

log = logging.getLogger(__name__)

# The paper's choice of a video VLM; its weights download on first use.
DEFAULT_MODEL = "llava-hf/LLaVA-NeXT-Video-7B-hf"
FRAMES_KEY = "caption_frames"
FRAMES_META_KEY = "caption_frames_meta"
_ERROR_CHARS = 400


def _is_ok(row: dict) -> bool:
    return row.get("status", schema.STATUS_OK) == schema.STATUS_OK


def reject_row(row: dict, message: str) -> dict:
    """Mark ``row`` a caption reject (in place): stage caption, reason caption_failed."""
    row["status"] = schema.STATUS_REJECTED
    row["reject_stage"] = schema.STAGE_CAPTION
    row["reject_reason"] = schema.REASON_CAPTION_FAILED
    row["error_message"] = message[:_ERROR_CHARS * 2]
    row.pop(FRAMES_KEY, None)
    row.pop(FRAMES_META_KEY, None)
    return row


def needs_caption(row: dict, model: str, prompt_hash: str) -> bool:
    """False when ``row`` already holds a caption from ``model`` with this prompt (resume)."""
    return not (
        row.get("caption") and row.get("caption_model") == model and row.get("caption_prompt_hash") == prompt_hash
    )


@dataclass(kw_only=True)
class CaptionPrepStage(Stage):
    """CPU: decode a clip once and sample its caption frames (``frames`` of them, or
    ``fps`` per second, at most ``max_frames``), short side ``short_side``. No model, no GPU."""

    name: ClassVar[str] = "caption_prep"

    frames: int | None = setting(8, "frames sampled per clip for captioning", ge=1)
    # Not settings.
    fps: float | None = None
    max_frames: int = DEFAULT_MAX_FRAMES
    short_side: int | None = 336  # the model's processor size (``for_model``)
    decode_timeout: float = 120.0
    threads: int = 1

    def for_model(self, model: str) -> CaptionPrepStage:
        """This stage with frames sampled at the size ``model``'s processor works at."""
        return dataclasses.replace(self, short_side=inspect_model(model, check_weights=False).frame_short_side)

    def placement(self, cluster: Cluster) -> Placement:
        return Placement(Resources(cpus=1))

    def __post_init__(self) -> None:
        num_frames, fps, short_side = self.frames, self.fps, self.short_side
        if num_frames is not None and fps is not None:
            raise ValueError("caption frames: give num_frames or fps, not both")
        if num_frames is None and fps is None:
            raise ValueError("caption frames: give num_frames or fps")
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"caption num_frames must be >= 1, got {num_frames}")
        if fps is not None and not fps > 0:
            raise ValueError(f"caption fps must be > 0, got {fps}")
        if short_side is not None and short_side < 16:
            raise ValueError(f"caption frame short side must be >= 16 px, got {short_side}")

    def sample(self, row: dict) -> ClipFrames:
        video = row.get("mp4")
        if video is None or len(video) == 0:
            raise ValueError("row has no clip bytes ('mp4')")
        # The record's frame count is at its frame rate: both or neither.
        known_rate = bool(row.get("fps") and row.get("num_frames"))
        return sample_frames(
            bytes(video) if not isinstance(video, (bytes, str)) else video,
            n=self.frames,
            fps=self.fps,
            size=self.short_side,
            src_fps=float(row["fps"]) if known_rate else None,
            num_frames=row.get("num_frames") if known_rate else None,
            width=row.get("width"),
            height=row.get("height"),
            max_frames=self.max_frames,
            threads=self.threads,
            timeout=self.decode_timeout,
            clip_id=row.get("clip_id"),
        )

    def process_row(self, row: dict) -> dict:
        if not _is_ok(row):
            return row
        try:
            clip = self.sample(row)
        except Exception as e:  # a bad clip never kills the run
            return reject_row(row, f"caption frames: decode failed: {type(e).__name__}: {e}")
        row[FRAMES_KEY] = clip.frames
        row[FRAMES_META_KEY] = {
            "frame_indices": list(clip.frame_indices),
            "total_frames": int(clip.total_frames),
            "src_fps": float(clip.src_fps),
        }
        return row

    def process(self, rows: list[dict]) -> list[dict]:
        return [self.process_row(row) for row in rows]


def _clip_from_row(row: dict) -> ClipFrames:
    frames = np.asarray(row[FRAMES_KEY])
    meta = row.get(FRAMES_META_KEY) or {}
    indices = meta.get("frame_indices")
    return ClipFrames(
        frames=frames if frames.dtype == np.uint8 else frames.astype(np.uint8),
        frame_indices=None if indices is None else [int(i) for i in indices],
        src_fps=float(meta.get("src_fps") or CLIP_FPS),
        total_frames=int(meta["total_frames"]) if meta.get("total_frames") else None,
        clip_id=row.get("clip_id"),
    )


@dataclass(kw_only=True, eq=False)
class CaptionStage(Stage):
    """GPU: caption prepared rows with a VLM loaded once per actor.

    ``model`` is a hub id or a local folder, stored as given in ``caption_model``; "none"
    turns captioning off. ``prompt`` a template name ("detailed", "short", "camera") or
    template text with ``{num_frames}``/``{duration_s}``; validated here, at construction.
    """

    name: ClassVar[str] = "caption"
    stateful: ClassVar[bool] = True  # the VLM is loaded once per actor

    model: str = setting(DEFAULT_MODEL, "VLM id or local path for captions, or 'none' to skip captioning",
                         decides=CAPTIONS)
    prompt: str = setting("detailed", "prompt template name or text (or, in code, a PromptTemplate)", decides=CAPTIONS)
    max_new_tokens: int = setting(128, "caption length limit in tokens", ge=1)
    batch_size: int = setting(8, "clips per generation batch", ge=1)
    workers: int | None = setting(None, "caption actors (default: one per GPU, else 1)", ge=1)
    device: str = setting("auto", "auto (a GPU when the cluster has one), cpu, cuda or cuda:N")
    # Not settings.
    dtype: Any = None
    backend: str = "transformers"
    offline: bool | None = None
    max_chars: int = DEFAULT_MAX_CHARS
    min_words: int = DEFAULT_MIN_WORDS
    generation_kwargs: dict | None = None
    backend_kwargs: dict | None = None
    retry_single: bool = True
    template: PromptTemplate = field(init=False, repr=False)
    prompt_hash: str = field(init=False, repr=False)
    loaded: Any = field(default=None, init=False, repr=False)  # the backend, once setup() ran
    stats: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"caption batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ValueError(f"caption max_new_tokens must be >= 1, got {self.max_new_tokens}")
        check_device(self.device, "caption_device")
        self.template = get_template(self.prompt)
        self.prompt_hash = self.template.hash
        self.stats = {"batches": 0, "clips": 0, "captioned": 0, "rejected": 0, "retried_batches": 0,
                      "output_tokens": 0, "generate_s": 0.0}

    @property
    def enabled(self) -> bool:
        return self.model.lower() != "none"

    def placement(self, cluster: Cluster) -> Placement:
        """One actor per GPU (or ``workers``) when the cluster has GPUs, else one on a CPU;
        a call is one generation batch."""
        gpu = cluster.on_gpu(self.device)
        return Placement(Resources(cpus=cluster.actor_cpus(1), gpus=1 if gpu else 0), rows_per_call=self.batch_size,
                         workers=self.workers or (cluster.gpus if gpu else 1))

    def run_device(self) -> str:
        """The device this worker runs the model on (``auto``: its GPU when it has one)."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def setup(self) -> None:
        """Load the model once (raises CaptionModelError with the fix when it is missing)."""
        if self.loaded is None:
            self.loaded = load_backend(
                self.model, self.run_device(), self.dtype, backend=self.backend, offline=self.offline,
                generation_kwargs=self.generation_kwargs, **(self.backend_kwargs or {}),
            )

    @property
    def frame_short_side(self) -> int | None:
        return None if self.loaded is None else self.loaded.frame_short_side

    # -- per batch -----------------------------------------------------------------

    def _prompt_for(self, row: dict, clip: ClipFrames) -> str:
        duration = row.get("duration_s")
        return self.template.render(num_frames=clip.num_frames,
                                    duration_s=float(duration) if duration else clip.duration_s)

    def _apply(self, row: dict, raw: str) -> None:
        row["caption_model"] = self.model
        row["caption_prompt_hash"] = self.prompt_hash
        result = clean_caption(raw, self.max_chars, min_words=self.min_words)
        if result.ok:
            row["caption"] = result.caption
            self.stats["captioned"] += 1
        else:
            row["caption"] = None
            reject_row(row, f"caption {result.reason}: {result.detail}; raw output: {raw[:_ERROR_CHARS]!r}")
            self.stats["rejected"] += 1

    def _fail(self, row: dict, e: BaseException) -> None:
        row["caption_model"] = self.model
        row["caption_prompt_hash"] = self.prompt_hash
        reject_row(row, f"caption generation failed: {type(e).__name__}: {str(e)[:_ERROR_CHARS]}")
        self.stats["rejected"] += 1

    @staticmethod
    def _free_memory() -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover
            pass

    def _generate(self, clips: list[ClipFrames], prompts: list[str]) -> list[str]:
        t = time.perf_counter()
        out = self.loaded.generate(clips, prompts, self.max_new_tokens)
        self.stats["generate_s"] += time.perf_counter() - t
        self.stats["output_tokens"] += getattr(self.loaded, "last_num_output_tokens", 0)
        if len(out) != len(clips):
            raise RuntimeError(f"backend returned {len(out)} captions for {len(clips)} clips")
        return out

    def caption_batch(self, rows: list[dict]) -> None:
        """Caption ``rows`` (ok, prepared) in place as one batch."""
        clips, prompts, live = [], [], []
        for row in rows:
            try:
                clip = _clip_from_row(row)
                prompts.append(self._prompt_for(row, clip))
                clips.append(clip)
                live.append(row)
            except Exception as e:
                self._fail(row, e)
        if not live:
            return
        self.stats["batches"] += 1
        self.stats["clips"] += len(live)
        try:
            raw = self._generate(clips, prompts)
        except Exception as e:
            self._free_memory()
            if len(live) == 1 or not self.retry_single:
                for row in live:
                    self._fail(row, e)
                return
            log.warning("caption batch of %d failed (%s: %s); retrying clip by clip",
                        len(live), type(e).__name__, str(e)[:200])
            self.stats["retried_batches"] += 1
            for row, clip, prompt in zip(live, clips, prompts):
                try:
                    self._apply(row, self._generate([clip], [prompt])[0])
                except Exception as e1:
                    self._free_memory()
                    self._fail(row, e1)
            return
        for row, text in zip(live, raw):
            self._apply(row, text)

    def process(self, rows: list[dict]) -> list[dict]:
        self.setup()
        todo = []
        for row in rows:
            if not _is_ok(row):
                continue
            if row.get(FRAMES_KEY) is None:
                reject_row(row, "caption: no frames prepared for this clip (CaptionPrepStage must run first)")
                self.stats["rejected"] += 1
                continue
            todo.append(row)
        for start in range(0, len(todo), self.batch_size):
            self.caption_batch(todo[start:start + self.batch_size])
        for row in rows:
            row.pop(FRAMES_KEY, None)
            row.pop(FRAMES_META_KEY, None)
        log.debug("caption totals so far: %s", self.stats)  # `kvid -v` shows them
        return rows
