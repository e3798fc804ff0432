"""Where a pipeline's components live and in which precision: device, dtypes, offload, compile.

:class:`PipelinePlacementMixin` is mixed into ``KandinskyVideoPipeline`` (generate/pipeline.py),
whose ``__init__`` sets the components and the attributes declared here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeVar

import torch
from torch import nn

from .config import DEFAULT_MOVQ_DTYPE, parse_dtype
from .interpolation import InterpolationUNet3D
from .movq import MoVQ
from .text_encoder import KandinskyTextEncoder
from .unet import KandinskyUNet3D

OFFLOAD_MODES = ("none", "text_encoder", "model")

P = TypeVar("P", bound="PipelinePlacementMixin")


class PipelinePlacementMixin:
    """Device placement, offload and precision of ``KandinskyVideoPipeline``'s components."""

    text_encoder: KandinskyTextEncoder | None
    unet: KandinskyUNet3D
    interpolation_unet: InterpolationUNet3D
    movq: MoVQ
    video_movq: MoVQ
    device: torch.device  # where the stages run
    offload: str  # one of OFFLOAD_MODES
    # dtype of an autocast region around every U-Net call (None: none); see use_official_precision
    unet_autocast: torch.dtype | None

    @property
    def components(self) -> dict[str, nn.Module]:
        comps = {
            "unet": self.unet, "interpolation_unet": self.interpolation_unet, "movq": self.movq,
            "video_movq": self.video_movq,
        }
        if self.text_encoder is not None:
            comps["text_encoder"] = self.text_encoder
        return comps

    def to(
        self: P,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        *,
        text_encoder_dtype: torch.dtype | str | None = None,
        movq_dtype: torch.dtype | str | None = None,
    ) -> P:
        """Move to ``device`` / cast. U-Nets take ``dtype``; MoVQs ``movq_dtype`` (default fp32, as
        upstream: see ``DEFAULT_MOVQ_DTYPE``); the text encoder ``text_encoder_dtype`` (default ``dtype``)."""
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            dt = parse_dtype(dtype)
            mdt = parse_dtype(movq_dtype, DEFAULT_MOVQ_DTYPE)
            tdt = parse_dtype(text_encoder_dtype, dt)
            for m in (self.unet, self.interpolation_unet):
                m.to(dtype=dt)
            for m in (self.movq, self.video_movq):
                m.to(dtype=mdt)
            if self.text_encoder is not None:
                self.text_encoder.to(dtype=tdt)
        self._place_all()
        return self

    def _resident(self, name: str) -> bool:
        if self.offload == "model":
            return False
        if self.offload == "text_encoder" and name == "text_encoder":
            return False
        return True

    def _place_all(self) -> None:
        for name, m in self.components.items():
            m.to(self.device if self._resident(name) else torch.device("cpu"))

    def use_official_precision(self: P) -> P:
        """Run with the official code's precision: fp16 U-Nets called under fp16 autocast (which
        keeps softmax and the norms in fp32), the text encoder and both MoVQs in fp32 (~55 GB of
        weights for the released model, against ~37 GB with bf16 U-Nets and encoder)."""
        self.to(dtype=torch.float16, text_encoder_dtype=torch.float32, movq_dtype=torch.float32)
        self.unet_autocast = torch.float16
        return self

    def _unet_precision(self) -> contextlib.AbstractContextManager:
        if self.unet_autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.unet_autocast)

    def enable_offload(self: P, mode: str = "model") -> P:
        """``"model"``: every component waits on the CPU and visits the GPU for its stage;
        ``"text_encoder"``: only the text encoder does; ``"none"``: all stay on the device."""
        if mode not in OFFLOAD_MODES:
            raise ValueError(f"offload must be one of {OFFLOAD_MODES}, got {mode!r}")
        self.offload = mode
        self._place_all()
        return self

    @contextlib.contextmanager
    def _on_device(self, name: str) -> Iterator[nn.Module]:
        module = self.components[name]
        if self._resident(name) or self.device.type == "cpu":
            yield module
            return
        module.to(self.device)
        try:
            yield module
        finally:
            module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def release_text_encoder(self) -> None:
        """Drop the text encoder (after all prompts are encoded) to free its memory."""
        self.text_encoder = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def compile(self: P, mode: str | None = None) -> P:
        """``torch.compile`` the U-Nets and the video decoder (in place; first call is slow)."""
        for m in (self.unet, self.interpolation_unet, self.video_movq.decoder):
            m.compile(mode=mode, dynamic=False)
        return self
