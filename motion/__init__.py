"""Motion scores for clips: mean optical-flow magnitude between consecutive 24 fps frames,
in px/frame at short side ``motion_size`` (see docs/motion.md).

Public API:

- ``get_backend(name, **opts) -> FlowBackend`` (``raft_large``, ``raft_small``, ``raft``,
  ``dis``, ``farneback``); ``FlowBackend.flow`` / ``FlowBackend.pair_stats``.
- ``compute_motion(frames, backend, stride=1, batch_size=None) -> MotionResult``;
  ``score_video(video, backend, size=256, fps=24, stride=1, ...) -> MotionResult``.
- ``MotionStage``: the pipeline stage (setup once, call on batches of rows).
- ``compute_levels``, ``write_levels``, ``read_levels``, ``collect_scores``: motion levels.
- RAFT weights: ``default_weights_path(variant)``, ``resolve_default_weights``,
  ``load_state_dict_file`` (see ``motion.raft``).
- Errors: ``MotionError`` (a clip), ``MotionWeightsError`` (RAFT weights, at start),
  ``MotionLevelsError``.

torch is imported only when a RAFT backend is used.
"""

from motion.backends import (
    BACKENDS,
    DISBackend,
    FarnebackBackend,
    FlowBackend,
    MotionError,
    MotionWeightsError,
    canonical_backend_name,
    flow_stats,
    get_backend,
    is_raft,
    stats_from_flow,
)
from motion.levels import (
    DEFAULT_PERCENTILES,
    LEVELS_FILE,
    MotionLevelsError,
    collect_scores,
    compute_levels,
    read_levels,
    write_levels,
)
from motion.raft import RaftBackend, default_weights_path, load_state_dict_file, resolve_default_weights
from motion.score import DEFAULT_FPS, DEFAULT_SIZE, MotionResult, compute_motion, num_pairs, score_video
from motion.stage import MotionStage

__all__ = [
    "BACKENDS",
    "DEFAULT_FPS",
    "DEFAULT_PERCENTILES",
    "DEFAULT_SIZE",
    "DISBackend",
    "FarnebackBackend",
    "FlowBackend",
    "LEVELS_FILE",
    "MotionError",
    "MotionLevelsError",
    "MotionResult",
    "MotionStage",
    "MotionWeightsError",
    "RaftBackend",
    "canonical_backend_name",
    "collect_scores",
    "compute_levels",
    "compute_motion",
    "default_weights_path",
    "flow_stats",
    "get_backend",
    "is_raft",
    "load_state_dict_file",
    "num_pairs",
    "read_levels",
    "resolve_default_weights",
    "score_video",
    "stats_from_flow",
    "write_levels",
]
