"""The parameters of one generated video, each declared once: its default, its help, its bounds.

:class:`GenerationParams` is their one home. ``KandinskyVideoPipeline.__call__`` takes its
defaults from :data:`DEFAULTS`; ``kvid generate``'s job models (``jobs.JobParams``, the
``defaults:`` block, and the per-job overrides of ``jobs.Job``) and the defaults shown in its
``--help`` are derived from :data:`GENERATION_SETTINGS`. A parameter has one name from the YAML
key to the Python keyword. The help of a parameter whose default is None says what None means
(``default: ...``).
"""

from __future__ import annotations

from dataclasses import dataclass

from curate.settings import Setting, setting, settings_of

from .config import FPS_PRESETS


@dataclass(frozen=True)
class GenerationParams:
    """What a video is generated with, besides its prompt and image (see docs/generate.md)."""

    width: int = setting(512, "multiples of 64 (random:tiny: 64 unless set)", gt=0)
    height: int = setting(512, "multiples of 64", gt=0)
    fps: str = setting("low", "low = 12 frames, medium = 45, high = 177; all 5.5 s", choices=tuple(FPS_PRESETS))
    motion: str | float = setting("medium", "low | medium | high | a number (motion score)")
    key_frame_guidance_scale: float = setting(5.0, "first frame (text-to-image) guidance")
    guidance_weight_prompt: float = setting(5.0, "keyframes: text guidance")
    guidance_weight_image: float = setting(2.0, "keyframes: first-frame guidance")
    interpolation_guidance_scale: float = setting(0.5, "interpolation guidance")
    noise_augmentation: int = setting(20, "noise level added to the first-frame latent of the keyframes", ge=0, lt=1000)
    num_inference_steps: int = setting(50, "first frame and keyframes", ge=1, le=1000)
    interpolation_steps: int = setting(10, "each interpolation pass", ge=1, le=1000)
    seed: int | None = setting(None, "default: random, written to the json", ge=0)
    negative_prompt: str | None = setting(None, "default: none")


DEFAULTS = GenerationParams()
GENERATION_SETTINGS: list[Setting] = settings_of(GenerationParams)
