"""Burnt-in text: the fraction of the picture covered by detected text (subtitles, captions,
watermarks, title cards), from the full-resolution branch of the analysis decode.

The border branch samples full-resolution luma frames (``border_samples_per_s``); this
feature keeps each as a JPEG of a ``width``-wide copy (tens of KB, so a 10-minute unit stays
in bounded memory). Only scenes that every cheaper filter kept are measured: a few frames
spread over the scene go through the PP-OCRv4 text detector of ``rapidocr_onnxruntime``
(ONNX Runtime on CPU; detection only, no recognition), loaded once per worker process. The
statistic is the mean over those frames of the area of the union of the text boxes, as a
fraction of the picture after the black-border crop.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from curate import schema
from curate.filters import Rejection
from curate.settings import CLIPS, setting


class TextModelError(RuntimeError):
    """The detector cannot be loaded: the message says what to install."""


@dataclass(frozen=True)
class TextParams:
    enabled: bool = setting(
        True, "measure burnt-in text (OCR text detection) on scenes the cheaper filters kept", key="text_filter", decides=CLIPS)
    max_text_area: float = setting(0.1, "reject scenes whose detected text covers more of the picture", ge=0, le=1, decides=CLIPS)
    frames: int = setting(3, "frames per scene measured for text", key="text_frames", ge=1, decides=CLIPS)
    # Not settings: fixed by the detector and by one analysis task per core.
    width: int = 640  # frames are measured this wide
    threads: int = 1  # ONNX Runtime threads per worker (one analysis task per core)


_DETECTORS: dict[int, Any] = {}
_LOCK = threading.Lock()


def load_detector(threads: int = 1):
    """RapidOCR's text detector (PP-OCRv4 det, shipped in the wheel), once per process."""
    with _LOCK:
        if threads not in _DETECTORS:
            try:
                import rapidocr_onnxruntime
                import yaml
                from rapidocr_onnxruntime.ch_ppocr_det import TextDetector
            except ImportError as e:
                raise TextModelError(
                    "the text filter needs rapidocr_onnxruntime: pip install rapidocr_onnxruntime onnxruntime, "
                    "or turn the filter off with --no-text-filter"
                ) from e
            root = os.path.dirname(rapidocr_onnxruntime.__file__)
            with open(os.path.join(root, "config.yaml"), encoding="utf-8") as f:
                cfg = yaml.safe_load(f)["Det"]
            # "max" keeps a 640-wide frame at its size (the package default upscales the short
            # side to 736 px: 7x slower for boxes the size of subtitles).
            cfg.update(model_path=os.path.join(root, cfg["model_path"]), limit_type="max", limit_side_len=960,
                       intra_op_num_threads=threads, inter_op_num_threads=1)
            _DETECTORS[threads] = TextDetector(cfg)
    return _DETECTORS[threads]


def text_area(frame_bgr: np.ndarray, threads: int = 1) -> float:
    """Fraction of ``frame_bgr`` covered by detected text boxes (their union)."""
    boxes, _ = load_detector(threads)(frame_bgr)
    if boxes is None or len(boxes) == 0:
        return 0.0
    mask = np.zeros(frame_bgr.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(b).astype(np.int32) for b in boxes], 1)
    return float(mask.mean())


class TextAreaFeature:
    """Fed with full-resolution luma samples; measured lazily, per scene, on request."""

    name = "text"

    def __init__(self, params: TextParams):
        self.params = params
        self._samples: dict[int, bytes] = {}  # frame index -> JPEG of the downscaled luma
        self.scale = 1.0  # stored width / source width

    def push(self, frame_index: int, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if w > self.params.width:
            self.scale = self.params.width / w
            frame = cv2.resize(frame, (self.params.width, max(2, round(h * self.scale))), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if ok:
            self._samples[frame_index] = jpeg.tobytes()

    def scene_stats(
        self, start_frame: int, end_frame: int, crop: tuple[int, int, int, int] | None = None
    ) -> dict[str, Any]:
        """``crop``: (x, y, w, h) in source pixels, the picture that will be kept."""
        inside = sorted(i for i in self._samples if start_frame <= i < end_frame)
        if not inside:
            return {}
        k = min(self.params.frames, len(inside))
        # Evenly spread, away from the scene's ends (where a transition may still show).
        picks = [inside[int((j + 0.5) * len(inside) / k)] for j in range(k)]
        areas = []
        for i in picks:
            img = cv2.imdecode(np.frombuffer(self._samples[i], np.uint8), cv2.IMREAD_GRAYSCALE)
            if img is None:  # our own JPEG: cannot fail to decode, but say so if it does
                raise ValueError("a kept text sample did not decode")
            if crop is not None:
                x, y, w, h = (int(round(v * self.scale)) for v in crop)
                img = img[y : y + max(h, 1), x : x + max(w, 1)]
            areas.append(text_area(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), self.params.threads))
        return {"text.area": float(np.mean(areas)), "text.area_max": float(np.max(areas))}


def check(stats: dict[str, Any], p: TextParams) -> Rejection | None:
    area = stats.get("text.area")
    if area is not None and area > p.max_text_area:
        return Rejection(schema.STAGE_FILTER, schema.REASON_TEXT,
                         f"text covers {area:.0%} of the picture > {p.max_text_area:.0%}")
    return None
