"""Burnt-in text: how much of the picture detected text covers, and how much of it is
overlaid (titles, subtitles, captions, watermarks), from the full-resolution branch of the
analysis decode.

The border branch samples full-resolution luma frames (``border_samples_per_s``); this
feature keeps each as a JPEG of a ``width``-wide copy (tens of KB, so a 10-minute unit stays
in bounded memory). Only scenes that every cheaper filter kept are measured: a few frames
spread over the scene go through the PP-OCRv4 text detector of ``rapidocr_onnxruntime``
(ONNX Runtime on CPU; detection only, no recognition), loaded once per worker process, on
the picture after the black-border crop.

Statistics (fractions of the picture): ``text.area`` / ``text.area_max``, the mean / largest
per-frame area of the union of all text boxes; ``text.boxes``, boxes per frame; and
``text.overlay_area`` / ``text.overlay_area_max``, the same for *overlay lines*: boxes that
are horizontal lines (at least ``overlay_min_elongation`` times as wide as tall, tilted
under 10 degrees) and steady (at least ``steady_edges`` of the box's edge pixels are still
edges, within a pixel, in the next luma sample, half a second later). A title or a subtitle
is drawn on top of the picture: flat, level and still while the scene moves under it. Text
that belongs to the scene moves with the camera, is seen at an angle, or is a word or two
on a sign (short boxes); the detector's false boxes on faces and textures are not lines.
What the rule cannot tell apart: a level line of scene text filmed by a camera that does not
move (a shop sign in a locked-off shot) counts as an overlay.
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
        True, "measure burnt-in text (OCR text detection) on scenes the cheaper filters kept", key="text_filter",
        decides=CLIPS)
    max_text_area: float = setting(0.1, "reject scenes whose detected text covers more of the picture", ge=0, le=1,
                                   decides=CLIPS)
    max_overlay_area: float = setting(
        0.01, "reject scenes where overlaid text lines (titles, subtitles, captions, watermarks: level, steady) "
              "cover more of the picture in any measured frame", ge=0, le=1, decides=CLIPS)
    frames: int = setting(3, "frames per scene measured for text", key="text_frames", ge=1, decides=CLIPS)
    # Not settings: fixed by the detector and by one analysis task per core, and what an
    # overlay line is (the statistic, not the decision).
    width: int = 640  # frames are measured this wide
    threads: int = 1  # ONNX Runtime threads per worker (one analysis task per core)
    overlay_min_elongation: float = 2.5  # an overlay line is at least this many times as wide as tall
    overlay_max_tilt_deg: float = 10.0
    steady_edges: float = 0.6  # fraction of a box's edges still there (within 1 px) half a second later
    min_edge_px: int = 20  # a box with fewer edge pixels is not judged steady


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


def text_boxes(frame_bgr: np.ndarray, threads: int = 1) -> list[np.ndarray]:
    """The detector's text boxes of ``frame_bgr``: (4, 2) corner points each."""
    boxes, _ = load_detector(threads)(frame_bgr)
    return [] if boxes is None else [np.asarray(b, np.float32) for b in boxes]


def _union(boxes: list[np.ndarray], shape: tuple[int, ...]) -> float:
    if not boxes:
        return 0.0
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(b).astype(np.int32) for b in boxes], 1)
    return float(mask.mean())


def text_area(frame_bgr: np.ndarray, threads: int = 1) -> float:
    """Fraction of ``frame_bgr`` covered by detected text boxes (their union)."""
    return _union(text_boxes(frame_bgr, threads), frame_bgr.shape)


def is_line(box: np.ndarray, p: TextParams) -> bool:
    """A level line of text: much wider than tall, hardly tilted."""
    (_, _), (w, h), angle = cv2.minAreaRect(box)
    if h > w:
        w, h, angle = h, w, angle - 90
    tilt = abs((angle + 90) % 180 - 90)
    return h > 0 and w >= p.overlay_min_elongation * h and tilt <= p.overlay_max_tilt_deg


def is_steady(box: np.ndarray, img: np.ndarray, later: np.ndarray | None, p: TextParams) -> bool:
    """The box's edges stay where they are between ``img`` and ``later`` (the next sample):
    an overlay's glyphs keep every edge while the scene changes behind and between them;
    text in the scene moves with the camera (its edges shift) or is shown at an angle."""
    if later is None or later.shape != img.shape:
        return False
    x, y, w, h = cv2.boundingRect(np.round(box).astype(np.int32))
    x, y = max(0, x), max(0, y)
    a, b = img[y : y + h, x : x + w], later[y : y + h, x : x + w]
    if a.size == 0:
        return False
    edges = cv2.Canny(a, 60, 180) > 0
    if edges.sum() < p.min_edge_px:
        return False
    near = cv2.dilate(cv2.Canny(b, 60, 180), np.ones((3, 3), np.uint8)) > 0
    return float((edges & near).sum() / edges.sum()) >= p.steady_edges


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

    def _sample(self, i: int, crop: tuple[int, int, int, int] | None) -> np.ndarray:
        img = cv2.imdecode(np.frombuffer(self._samples[i], np.uint8), cv2.IMREAD_GRAYSCALE)
        if img is None:  # our own JPEG: cannot fail to decode, but say so if it does
            raise ValueError("a kept text sample did not decode")
        if crop is not None:
            x, y, w, h = (int(round(v * self.scale)) for v in crop)
            img = img[y : y + max(h, 1), x : x + max(w, 1)]
        return img

    def scene_stats(
        self, start_frame: int, end_frame: int, crop: tuple[int, int, int, int] | None = None
    ) -> dict[str, Any]:
        """``crop``: (x, y, w, h) in source pixels, the picture that will be kept."""
        p = self.params
        inside = sorted(i for i in self._samples if start_frame <= i < end_frame)
        if not inside:
            return {}
        k = min(p.frames, len(inside))
        # Evenly spread, away from the scene's ends (where a transition may still show).
        picks = [int((j + 0.5) * len(inside) / k) for j in range(k)]
        areas, overlay, counts = [], [], []
        for j in picks:
            img = self._sample(inside[j], crop)
            # Steadiness against the next sample (the one before for the scene's last).
            other = j + 1 if j + 1 < len(inside) else j - 1
            later = self._sample(inside[other], crop) if other >= 0 and other != j else None
            boxes = text_boxes(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), p.threads)
            lines = [b for b in boxes if is_line(b, p) and is_steady(b, img, later, p)]
            areas.append(_union(boxes, img.shape))
            overlay.append(_union(lines, img.shape))
            counts.append(len(boxes))
        return {"text.area": float(np.mean(areas)), "text.area_max": float(np.max(areas)),
                "text.boxes": float(np.mean(counts)),
                "text.overlay_area": float(np.mean(overlay)), "text.overlay_area_max": float(np.max(overlay))}


def check(stats: dict[str, Any], p: TextParams) -> Rejection | None:
    area = stats.get("text.area")
    if area is not None and area > p.max_text_area:
        return Rejection(schema.STAGE_FILTER, schema.REASON_TEXT,
                         f"text covers {area:.0%} of the picture > {p.max_text_area:.0%}")
    overlay = stats.get("text.overlay_area_max")
    if overlay is not None and overlay > p.max_overlay_area:
        return Rejection(schema.STAGE_FILTER, schema.REASON_TEXT,
                         f"overlaid text lines (titles, subtitles) cover {overlay:.1%} of the picture in a frame "
                         f"> {p.max_overlay_area:.1%}")
    return None
