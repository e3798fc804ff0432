"""Scene detection: PySceneDetect's detectors fed with frames we decode ourselves.

We drive the detectors frame by frame instead of using ``SceneManager`` + its video
backends so that one ffmpeg decode serves scene detection and border detection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.ffmpeg import terminal_input_detached

# Importing scenedetect runs `ffmpeg -v quiet` once to find it, with our stdin: in a worker of
# a terminal session that child would be stopped by the kernel (see detach_terminal_input).
with terminal_input_detached():
    from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode

DETECTORS = ("content", "adaptive", "transnetv2")  # transnetv2: see curate/transitions.py
PYSCENEDETECT_DETECTORS = ("content", "adaptive")


@dataclass(frozen=True)
class Scene:
    start_frame: int  # inclusive, source frame index
    end_frame: int  # exclusive

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame


class SceneDetector:
    """Feed BGR frames in order with ``push``; ``cuts()`` gives the frame indices where
    new scenes start (never 0)."""

    def __init__(
        self,
        fps: float,
        detector: str = "content",
        threshold: float | None = None,
        min_scene_len_s: float = 0.5,
        first_frame: int = 0,
    ):
        if detector not in PYSCENEDETECT_DETECTORS:
            raise ValueError(f"unknown PySceneDetect detector {detector!r}; choose one of {PYSCENEDETECT_DETECTORS}")
        self.fps = fps
        min_len = max(1, int(round(min_scene_len_s * fps)))
        if detector == "content":
            self._detector = ContentDetector(threshold=27.0 if threshold is None else threshold, min_scene_len=min_len)
        else:
            self._detector = AdaptiveDetector(
                adaptive_threshold=3.0 if threshold is None else threshold, min_scene_len=min_len
            )
        self._next = first_frame
        self._cuts: list[int] = []

    def push(self, frame_bgr: np.ndarray) -> None:
        tc = FrameTimecode(self._next, self.fps)
        self._cuts += [c.frame_num for c in self._detector.process_frame(tc, frame_bgr)]
        self._next += 1

    def cuts(self) -> list[int]:
        """Call once, after the last frame."""
        if self._next > 0:
            tail = self._detector.post_process(FrameTimecode(self._next - 1, self.fps))
            self._cuts += [c.frame_num for c in tail or []]
        return sorted(set(self._cuts))


def scenes_from_cuts(cuts: list[int], first_frame: int, end_frame: int) -> list[Scene]:
    """Split [first_frame, end_frame) at ``cuts`` into scenes."""
    bounds = [first_frame] + [c for c in sorted(set(cuts)) if first_frame < c < end_frame] + [end_frame]
    return [Scene(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


@dataclass(frozen=True)
class Segment:
    """A stretch of a unit: a scene, or a gradual transition that belongs to no clip."""

    start_frame: int
    end_frame: int  # exclusive
    transition: bool = False


def segments(cuts: list[int], transitions: list[tuple[int, int]], first_frame: int, end_frame: int) -> list[Segment]:
    """Split [first_frame, end_frame) at ``cuts``, then carve out the ``transitions``
    ([start, end) frame ranges): scenes never contain a transition frame, and a cut that
    falls inside a transition is the transition's. Segments cover the unit exactly."""
    gaps: list[tuple[int, int]] = []
    for a, b in sorted(transitions):
        a, b = max(a, first_frame), min(b, end_frame)
        if b <= a:
            continue
        if gaps and a <= gaps[-1][1]:  # overlapping or touching: one transition
            gaps[-1] = (gaps[-1][0], max(gaps[-1][1], b))
        else:
            gaps.append((a, b))
    out: list[Segment] = []
    pos = first_frame
    for a, b in gaps + [(end_frame, end_frame)]:
        inner = [c for c in cuts if pos < c < a]
        out += [Segment(s.start_frame, s.end_frame) for s in scenes_from_cuts(inner, pos, a)]
        if b > a:
            out.append(Segment(a, b, transition=True))
        pos = b
    return out
