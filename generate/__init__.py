"""Kandinsky Video 1.1 inference in plain PyTorch (text-to-video and image-to-video).

Quick start (official weights downloaded to a local folder)::

    from generate import get_T2V_pipeline
    pipe = get_T2V_pipeline("cuda", dtype="bf16", weights_dir="/models/KandinskyVideo_1_1")
    video = pipe("a red car driving along the beach at sunset", fps="medium", motion="high", seed=0)
    video.save("car.mp4")

See docs/generate.md for the architecture, the checkpoint layout and the ``kvid generate`` jobs.
"""

from curate.version import KVID_VERSION as __version__

from .checkpoints import (
    OFFICIAL_FILES,
    CheckpointKeyError,
    convert_official_to_safetensors,
    load_component,
    map_official_state_dict,
    save_component,
)
from .config import FPS_PRESETS, NUM_KEYFRAMES, VIDEO_SECONDS, PipelineConfig, num_video_frames, parse_dtype
from .interpolation import InterpolationUNet3D, InterpolationUNetConfig
from .motion_levels import OFFICIAL_MOTION_LEVELS, MotionLevels, load_motion_levels, resolve_motion
from .movq import MoVQ, MoVQConfig
from .pipeline import KandinskyVideoPipeline, get_T2V_pipeline, load_pipeline
from .scheduler import DDPMScheduler, DDPMSchedulerConfig
from .text_encoder import KandinskyTextEncoder, MissingWeightsError, PromptEmbeds, TextEncoderConfig
from .unet import KandinskyUNet3D, UNet3DConfig
from .video_io import VideoOutput, prepare_image

__all__ = [
    "__version__",
    "CheckpointKeyError",
    "DDPMScheduler",
    "DDPMSchedulerConfig",
    "FPS_PRESETS",
    "InterpolationUNet3D",
    "InterpolationUNetConfig",
    "KandinskyTextEncoder",
    "KandinskyUNet3D",
    "KandinskyVideoPipeline",
    "MissingWeightsError",
    "MoVQ",
    "MoVQConfig",
    "MotionLevels",
    "NUM_KEYFRAMES",
    "OFFICIAL_FILES",
    "OFFICIAL_MOTION_LEVELS",
    "PipelineConfig",
    "PromptEmbeds",
    "TextEncoderConfig",
    "UNet3DConfig",
    "VIDEO_SECONDS",
    "VideoOutput",
    "convert_official_to_safetensors",
    "get_T2V_pipeline",
    "load_component",
    "load_motion_levels",
    "load_pipeline",
    "map_official_state_dict",
    "num_video_frames",
    "parse_dtype",
    "prepare_image",
    "resolve_motion",
    "save_component",
]
