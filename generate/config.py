"""Pipeline-level configuration: the component configs together, presets, dtype parsing.

Each component keeps its own config dataclass next to its module (``UNet3DConfig`` in
``unet.py``, ``InterpolationUNetConfig``, ``MoVQConfig``, ``TextEncoderConfig``,
``DDPMSchedulerConfig``); :class:`PipelineConfig` only groups them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .interpolation import InterpolationUNetConfig
from .movq import MoVQConfig
from .scheduler import DDPMSchedulerConfig
from .text_encoder import TextEncoderConfig
from .unet import UNet3DConfig

NUM_KEYFRAMES = 12
VIDEO_SECONDS = 5.5
# fps preset -> interpolation passes, each with the skip_frames value the official code passes
FPS_PRESETS: dict[str, tuple[int, ...]] = {"low": (), "medium": (3,), "high": (3, 1)}

_DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}


# The MoVQ decoders run in fp32 unless asked otherwise, as upstream: in bf16 their decode is off
# by 1-2 % RMS (several uint8 levels; measured by bench/movq_precision.py, see docs/generate.md),
# for 0.83B parameters of the ~17B pipeline. The U-Nets and the text encoder follow ``dtype``.
DEFAULT_MOVQ_DTYPE = torch.float32


def parse_dtype(value: str | torch.dtype | None, default: torch.dtype = torch.float32) -> torch.dtype:
    if value is None:
        return default
    if isinstance(value, torch.dtype):
        return value
    try:
        return _DTYPES[str(value).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {value!r}: use one of bf16, fp16, fp32") from None


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def num_video_frames(fps: str, num_keyframes: int = NUM_KEYFRAMES) -> int:
    """Frames of a video for an fps preset: 12 keyframes, each interpolation pass n -> 4n - 3."""
    if fps not in FPS_PRESETS:
        raise ValueError(f"fps must be one of {list(FPS_PRESETS)}, got {fps!r}")
    n = num_keyframes
    for _ in FPS_PRESETS[fps]:
        n = 4 * n - 3
    return n


@dataclass
class PipelineConfig:
    unet: UNet3DConfig = field(default_factory=UNet3DConfig)
    interpolation_unet: InterpolationUNetConfig = field(default_factory=InterpolationUNetConfig)
    movq: MoVQConfig = field(default_factory=MoVQConfig.image)
    video_movq: MoVQConfig = field(default_factory=MoVQConfig.video)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    keyframe_scheduler: DDPMSchedulerConfig = field(default_factory=DDPMSchedulerConfig.keyframes)
    interpolation_scheduler: DDPMSchedulerConfig = field(default_factory=DDPMSchedulerConfig.interpolation)
    num_keyframes: int = NUM_KEYFRAMES
    video_seconds: float = VIDEO_SECONDS

    def __post_init__(self) -> None:
        ctx = {self.unet.context_dim, self.interpolation_unet.context_dim, self.text_encoder.context_dim}
        if len(ctx) != 1:
            raise ValueError(f"context_dim differs between text encoder and U-Nets: {sorted(ctx)}")
        if self.movq.z_channels != self.video_movq.z_channels or self.unet.out_channels != self.movq.z_channels:
            raise ValueError("latent channels differ between the U-Net and the MoVQs")

    @classmethod
    def kandinsky_video_1_1(cls) -> PipelineConfig:
        return cls()

    @classmethod
    def tiny(cls) -> PipelineConfig:
        return cls(
            unet=UNet3DConfig.tiny(),
            interpolation_unet=InterpolationUNetConfig.tiny(),
            movq=MoVQConfig.tiny(),
            video_movq=MoVQConfig.tiny(temporal=True, temporal_attention_block=True, with_encoder=False),
            text_encoder=TextEncoderConfig(pretrained="tiny-random", tokens_length=16, context_dim=16),
        )

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this (MoVQ factor x U-Net downsampling)."""
        return self.movq.downsample_factor * 2 ** (len(self.unet.dim_mult) - 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "unet": self.unet.to_dict(),
            "interpolation_unet": self.interpolation_unet.to_dict(),
            "movq": self.movq.to_dict(),
            "video_movq": self.video_movq.to_dict(),
            "text_encoder": self.text_encoder.to_dict(),
            "keyframe_scheduler": self.keyframe_scheduler.to_dict(),
            "interpolation_scheduler": self.interpolation_scheduler.to_dict(),
            "num_keyframes": self.num_keyframes,
            "video_seconds": self.video_seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        return cls(
            unet=UNet3DConfig.from_dict(d["unet"]),
            interpolation_unet=InterpolationUNetConfig.from_dict(d["interpolation_unet"]),
            movq=MoVQConfig.from_dict(d["movq"]),
            video_movq=MoVQConfig.from_dict(d["video_movq"]),
            text_encoder=TextEncoderConfig.from_dict(d["text_encoder"]),
            keyframe_scheduler=DDPMSchedulerConfig(**d.get("keyframe_scheduler", {})),
            interpolation_scheduler=DDPMSchedulerConfig(
                **d.get("interpolation_scheduler", DDPMSchedulerConfig.interpolation().to_dict())
            ),
            num_keyframes=d.get("num_keyframes", NUM_KEYFRAMES),
            video_seconds=d.get("video_seconds", VIDEO_SECONDS),
        )

    @classmethod
    def from_official(cls, configs: dict[str, Any] | None) -> PipelineConfig:
        """From the official ``configs.json`` (already unwrapped); None -> released presets."""
        if configs is None:
            return cls.kandinsky_video_1_1()
        base = cls.kandinsky_video_1_1()
        unet = UNet3DConfig.from_dict(configs["t2v"]) if "t2v" in configs else base.unet
        interp = (
            InterpolationUNetConfig.from_dict(configs["interpolation"]) if "interpolation" in configs else base.interpolation_unet
        )
        movq = MoVQConfig.from_official(configs["image_movq"]) if "image_movq" in configs else base.movq
        video = (
            MoVQConfig.from_official(configs["video_movq"], with_encoder=False) if "video_movq" in configs else base.video_movq
        )
        te = base.text_encoder
        if "text_encoder" in configs:
            t = configs["text_encoder"]
            te = TextEncoderConfig(
                pretrained=t.get("weights_path", te.pretrained),
                tokens_length=t.get("tokens_length", te.tokens_length),
                context_dim=t.get("context_dim", te.context_dim),
            )
        return cls(unet=unet, interpolation_unet=interp, movq=movq, video_movq=video, text_encoder=te)
