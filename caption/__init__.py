"""Video captioning for kvid: VLM backends, frame sampling, prompts, hygiene, stages.

Light to import (no torch, no transformers until a model is loaded). See docs/caption.md.
"""

from caption.backends import BACKENDS, CaptionBackend, TransformersBackend, VLLMBackend, load_backend, vllm_available
from caption.errors import CaptionBackendUnavailable, CaptionModelError
from caption.families import FAMILIES, FamilySpec
from caption.hygiene import CleanResult, clean_caption
from caption.model_files import ModelSpec, inspect_model
from caption.prompts import (
    DEFAULT_TEMPLATE,
    TEMPLATES,
    PromptError,
    PromptTemplate,
    get_template,
    prompt_hash,
    validate_template,
)
from caption.sampling import ClipFrames, sample_frame_indices, sample_frames
from caption.stage import CaptionPrepStage, CaptionStage, needs_caption, reject_row

__all__ = [
    "BACKENDS",
    "FAMILIES",
    "CaptionBackend",
    "CaptionBackendUnavailable",
    "CaptionModelError",
    "CaptionPrepStage",
    "CaptionStage",
    "CleanResult",
    "ClipFrames",
    "DEFAULT_TEMPLATE",
    "FamilySpec",
    "ModelSpec",
    "PromptError",
    "PromptTemplate",
    "TEMPLATES",
    "TransformersBackend",
    "VLLMBackend",
    "clean_caption",
    "get_template",
    "inspect_model",
    "load_backend",
    "needs_caption",
    "prompt_hash",
    "reject_row",
    "sample_frame_indices",
    "sample_frames",
    "validate_template",
    "vllm_available",
]
