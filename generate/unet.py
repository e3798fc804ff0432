"""Kandinsky 3 text-to-image U-Net with temporal modules: the keyframe U-Net3D of Kandinsky Video 1.1.

One module serves two modes, as in the official ``kandinsky_video/model/unet.py``:

* **image mode** (``num_frames=None``): the Kandinsky 3 text-to-image U-Net that draws the first
  frame. Input goes through ``image_in_layer``; temporal modules are skipped.
* **video mode** (``num_frames=T``): the keyframe U-Net. Input (rows laid out ``(b t)``) goes
  through ``in_layer``; temporal modules run with the time embedding plus a per-frame
  conditioning embedding ``to_temporal_embed(frame index) + motion-score embedding +
  noise-augmentation-level embedding``.

The official code picks the input layer from the batch size (``x.shape[0] > 2``); we make the
mode explicit. Attribute names (and therefore state-dict keys) mirror the official module tree.

Temporal variants (``temporal_type``) compared in the FusionFrames paper:

* ``"conv1d_attn1d_blocks"`` (the released model): separate temporal blocks, i.e.
  ``TemporalResNetBlock`` (bottleneck of Conv3d (k,1,1), k = 1, 3, 3, 1) after each spatial
  ResNet block and a ``TemporalAttentionBlock`` (attention over frames + FFN) after each
  self-attention block.
* ``"conv1d_attn1d_layers"``: temporal *layers* mixed into the spatial blocks: a conditioned
  Conv3d (3,1,1) residual layer after each 3x3 convolution of every ResNet block and one
  temporal attention layer per level (where the level has self-attention).
* ``"conv3d_layers"``: a conditioned Conv3d (3,3,3) residual layer after each 3x3 convolution,
  no temporal attention.

Only the first variant has released weights; the two others are our implementation of the
paper's description (zero-initialised, so an image checkpoint starts as a per-frame model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    Attention,
    AttentionPolling,
    ConditionalGroupNorm,
    EmbeddingMLP,
    FeedForward,
    TemporalAttention,
    TemporalInfo,
    conv_over_frames,
    repeat_rows,
)
from .unet_base import (
    BOTTLENECK_KERNELS,
    ResNetBlockBase,
    UNetBase,
    UNetConfigBase,
    as_rows,
    bottleneck_channels,
    call_optional,
    down_level_blocks,
    identity_or,
    up_level_blocks,
)

TemporalType = Literal["conv1d_attn1d_blocks", "conv1d_attn1d_layers", "conv3d_layers"]
TEMPORAL_TYPES = ("conv1d_attn1d_blocks", "conv1d_attn1d_layers", "conv3d_layers")


@dataclass
class UNet3DConfig(UNetConfigBase):
    """Configuration of :class:`KandinskyUNet3D`; field names follow the official ``configs.json``.

    The fields common to both U-Nets (channels, levels, attention per level) are in
    :class:`~generate.unet_base.UNetConfigBase`.
    """

    num_channels: int = 9  # input: 4 latent + 4 first-frame condition + 1 mask
    noise_augmentation: bool = True
    motion_score: bool = True
    temporal_type: TemporalType = "conv1d_attn1d_blocks"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temporal_type not in TEMPORAL_TYPES:
            raise ValueError(f"temporal_type must be one of {TEMPORAL_TYPES}, got {self.temporal_type!r}")
        init = self.init_channels or self.model_channels
        for ch in [init, *(self.model_channels * m for m in self.dim_mult)]:
            if ch % self.groups:
                raise ValueError(f"channel count {ch} is not divisible by groups={self.groups}")

    @classmethod
    def kandinsky_video_1_1(cls) -> UNet3DConfig:
        """The released t2v U-Net (4.149B parameters, 1.110B of them temporal)."""
        return cls()


# --------------------------------------------------------------------------------------------
# temporal helpers


def temporal_conv(conv: nn.Conv3d, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Apply a 'same'-padded Conv3d to (B*T, C, H, W) rows laid out ``(b t)``."""
    return conv_over_frames(x, conv.weight, conv.bias, num_frames)


class TemporalConvLayer(nn.Module):
    """``x + Conv3d(SiLU(CondNorm(x)))`` (zero-initialised): the temporal layer of the layer variants."""

    def __init__(self, channels: int, emb_dim: int, groups: int, kernel: tuple[int, int, int]):
        super().__init__()
        self.temporal_norm = ConditionalGroupNorm(groups, channels, emb_dim)
        self.temporal_projection = nn.Conv3d(channels, channels, kernel, padding=tuple(k // 2 for k in kernel))
        nn.init.zeros_(self.temporal_projection.weight)
        nn.init.zeros_(self.temporal_projection.bias)

    def forward(self, x: torch.Tensor, temporal: TemporalInfo | None) -> torch.Tensor:
        if temporal is None:
            return x
        out = F.silu(self.temporal_norm(x, temporal.embed))
        return x + temporal_conv(self.temporal_projection, out, temporal.num_frames)


class TemporalAttentionLayer(nn.Module):
    """``x + TemporalAttention(CondNorm(x))`` without FFN: the attention layer of ``conv1d_attn1d_layers``."""

    def __init__(self, channels: int, emb_dim: int, groups: int, head_dim: int):
        super().__init__()
        self.temporal_norm = ConditionalGroupNorm(groups, channels, emb_dim)
        self.temporal_attention = TemporalAttention(channels, channels, head_dim)
        nn.init.zeros_(self.temporal_attention.output_layer.weight)

    def forward(self, x: torch.Tensor, temporal: TemporalInfo) -> torch.Tensor:
        return x + _frames_attention(self.temporal_attention, self.temporal_norm(x, temporal.embed), temporal.num_frames)


def _frames_attention(attn: TemporalAttention, x: torch.Tensor, t: int) -> torch.Tensor:
    bt, c, h, w = x.shape
    seq = x.view(bt // t, t, c, h * w).transpose(2, 3)  # (B, T, HW, C)
    out = attn(seq)  # (B, T, HW, C)
    return out.transpose(2, 3).reshape(bt, c, h, w)


# --------------------------------------------------------------------------------------------
# spatial blocks (Kandinsky 3)


class Block(nn.Module):
    """CondNorm -> SiLU -> [ConvTranspose up] -> Conv -> [temporal layer] -> [Conv down]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_embed_dim: int,
        kernel_size: int = 3,
        norm_groups: int = 32,
        up_resolution: bool | None = None,
        temporal_layer: nn.Module | None = None,
    ):
        super().__init__()
        self.group_norm = ConditionalGroupNorm(norm_groups, in_channels, time_embed_dim)
        self.activation = nn.SiLU()
        self.up_sample = (
            nn.ConvTranspose2d(in_channels, in_channels, kernel_size=2, stride=2) if up_resolution is True else nn.Identity()
        )
        padding = 0 if kernel_size == 1 else 1
        self.projection = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=padding)
        if temporal_layer is not None:
            self.temporal_layer = temporal_layer
        self.down_sample = (
            nn.Conv2d(out_channels, out_channels, kernel_size=2, stride=2) if up_resolution is False else nn.Identity()
        )

    def forward(self, x: torch.Tensor, time_embed: torch.Tensor, temporal: TemporalInfo | None = None) -> torch.Tensor:
        x = self.activation(self.group_norm(x, time_embed))
        x = self.up_sample(x)
        x = self.projection(x)
        if hasattr(self, "temporal_layer"):
            x = self.temporal_layer(x, temporal)
        return self.down_sample(x)


class ResNetBlock(ResNetBlockBase):
    """Bottleneck of four Blocks (kernels 1, 3, 3, 1) with a resampling shortcut; the layer
    variants put a temporal layer after each 3x3 convolution."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_embed_dim: int,
        norm_groups: int = 32,
        compression_ratio: int = 2,
        up_resolutions: tuple[bool | None, ...] = (None, None, None, None),
        temporal_layer_factory=None,
    ):
        chans = bottleneck_channels(in_channels, out_channels, compression_ratio)
        blocks = [
            Block(
                i, o, time_embed_dim, k, norm_groups, up,
                temporal_layer_factory(o) if temporal_layer_factory is not None and k == 3 else None,
            )
            for (i, o), k, up in zip(chans, BOTTLENECK_KERNELS, up_resolutions)
        ]
        super().__init__(blocks, in_channels, out_channels, up_resolutions)


class TemporalResNetBlock(nn.Module):
    """Bottleneck of four (CondNorm, SiLU, Conv3d (k,1,1)), k = 1, 3, 3, 1; last conv zero-initialised."""

    def __init__(self, num_channels: int, time_embed_dim: int, norm_groups: int = 32, compression_ratio: int = 2):
        super().__init__()
        chans = bottleneck_channels(num_channels, num_channels, compression_ratio)
        self.temporal_resnet_blocks = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        ConditionalGroupNorm(norm_groups, i, time_embed_dim),
                        nn.SiLU(),
                        nn.Conv3d(i, o, (k, 1, 1), padding=(k // 2, 0, 0)),
                    ]
                )
                for (i, o), k in zip(chans, BOTTLENECK_KERNELS)
            ]
        )
        nn.init.zeros_(self.temporal_resnet_blocks[-1][-1].weight)
        nn.init.zeros_(self.temporal_resnet_blocks[-1][-1].bias)

    def forward(self, x: torch.Tensor, temporal: TemporalInfo) -> torch.Tensor:
        out = x
        for norm, act, conv in self.temporal_resnet_blocks:
            out = temporal_conv(conv, act(norm(out, temporal.embed)), temporal.num_frames)
        return x + out


class AttentionBlock(nn.Module):
    """CondNorm -> (self or cross) attention -> residual; CondNorm -> 1x1-conv FFN -> residual."""

    def __init__(
        self,
        num_channels: int,
        time_embed_dim: int,
        context_dim: int | None = None,
        norm_groups: int = 32,
        head_dim: int = 64,
        expansion_ratio: int = 4,
    ):
        super().__init__()
        self.is_cross = context_dim is not None
        self.in_norm = ConditionalGroupNorm(norm_groups, num_channels, time_embed_dim)
        self.attention = Attention(num_channels, num_channels, context_dim or num_channels, head_dim)
        self.out_norm = ConditionalGroupNorm(norm_groups, num_channels, time_embed_dim)
        self.feed_forward = FeedForward(num_channels, expansion_ratio)

    def forward(
        self,
        x: torch.Tensor,
        time_embed: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        out = self.in_norm(x, time_embed).flatten(2).transpose(1, 2)  # (B, HW, C)
        if self.is_cross:
            out = self.attention(out, context, context_mask)
        else:
            out = self.attention(out)
        x = x + out.transpose(1, 2).reshape(b, c, h, w)
        return x + self.feed_forward(self.out_norm(x, time_embed))


def make_self_attention(cfg: UNetConfigBase, channels: int, present: bool) -> nn.Module:
    """A level's self-attention block, or its placeholder on levels without one."""
    return identity_or(
        present, lambda: AttentionBlock(channels, cfg.time_embed_dim, None, cfg.groups, cfg.head_dim, cfg.expansion_ratio)
    )


def make_cross_attention(cfg: UNetConfigBase, channels: int, context_dim: int | None) -> nn.Module:
    """A text cross-attention block, or its placeholder on levels without text (``context_dim`` None)."""
    return identity_or(
        context_dim is not None,
        lambda: AttentionBlock(channels, cfg.time_embed_dim, context_dim, cfg.groups, cfg.head_dim, cfg.expansion_ratio),
    )


class TemporalAttentionBlock(nn.Module):
    """Attention over frames per pixel + FFN, both conditioned on the temporal embedding."""

    def __init__(
        self, num_channels: int, time_embed_dim: int, norm_groups: int = 32, head_dim: int = 64, expansion_ratio: int = 4
    ):
        super().__init__()
        self.temporal_norm = ConditionalGroupNorm(norm_groups, num_channels, time_embed_dim)
        self.temporal_attention = TemporalAttention(num_channels, num_channels, head_dim)
        nn.init.zeros_(self.temporal_attention.output_layer.weight)
        self.ff_norm = ConditionalGroupNorm(norm_groups, num_channels, time_embed_dim)
        self.feed_forward = FeedForward(num_channels, expansion_ratio)

    def forward(self, x: torch.Tensor, temporal: TemporalInfo) -> torch.Tensor:
        x = x + _frames_attention(self.temporal_attention, self.temporal_norm(x, temporal.embed), temporal.num_frames)
        return x + self.feed_forward(self.ff_norm(x, temporal.embed))


class _LevelMixin:
    config: UNet3DConfig

    def _temporal_parts(self, cfg: UNet3DConfig, self_attention: bool, channels: int):
        """(temporal attention module at this level, factory of per-conv temporal layers, blocks?)."""
        tt = cfg.temporal_type
        t_dim, groups = cfg.time_embed_dim, cfg.groups
        if tt == "conv1d_attn1d_blocks":
            attn = identity_or(
                self_attention,
                lambda: TemporalAttentionBlock(channels, t_dim, groups, cfg.head_dim, cfg.expansion_ratio),
            )
            return attn, None, True
        kernel = (3, 1, 1) if tt == "conv1d_attn1d_layers" else (3, 3, 3)
        factory = lambda ch: TemporalConvLayer(ch, t_dim, groups, kernel)  # noqa: E731
        attn = identity_or(
            self_attention and tt == "conv1d_attn1d_layers",
            lambda: TemporalAttentionLayer(channels, t_dim, groups, cfg.head_dim),
        )
        return attn, factory, False


class DownSampleBlock(nn.Module, _LevelMixin):
    def __init__(
        self, cfg: UNet3DConfig, in_channels: int, out_channels: int, context_dim: int | None, num_blocks: int,
        down_sample: bool, self_attention: bool,
    ):
        super().__init__()
        t_dim, g = cfg.time_embed_dim, cfg.groups
        self.self_attention_block = make_self_attention(cfg, in_channels, self_attention)
        self.temporal_attention_block, layer_factory, use_blocks = self._temporal_parts(cfg, self_attention, in_channels)
        self.resnet_attn_blocks = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        ResNetBlock(i, o, t_dim, g, cfg.compression_ratio, temporal_layer_factory=layer_factory),
                        make_cross_attention(cfg, o, context_dim),
                        ResNetBlock(o, o, t_dim, g, cfg.compression_ratio, up, temporal_layer_factory=layer_factory),
                        identity_or(use_blocks, lambda o=o: TemporalResNetBlock(o, t_dim, g, cfg.compression_ratio)),
                        identity_or(use_blocks, lambda o=o: TemporalResNetBlock(o, t_dim, g, cfg.compression_ratio)),
                    ]
                )
                for i, o, up in down_level_blocks(in_channels, out_channels, num_blocks, down_sample)
            ]
        )

    def forward(self, x, time_embed, context, context_mask, temporal: TemporalInfo | None):
        x = call_optional(self.self_attention_block, x, time_embed)
        if temporal is not None:
            x = call_optional(self.temporal_attention_block, x, temporal)
        for in_res, attn, out_res, in_temp, out_temp in self.resnet_attn_blocks:
            x = in_res(x, time_embed, temporal)
            if temporal is not None:
                x = call_optional(in_temp, x, temporal)
            x = call_optional(attn, x, time_embed, context, context_mask)
            x = out_res(x, time_embed, temporal)
            if temporal is not None:
                x = call_optional(out_temp, x, temporal)
        return x


class UpSampleBlock(nn.Module, _LevelMixin):
    def __init__(
        self, cfg: UNet3DConfig, in_channels: int, cat_dim: int, out_channels: int, context_dim: int | None,
        num_blocks: int, up_sample: bool, self_attention: bool,
    ):
        super().__init__()
        t_dim, g = cfg.time_embed_dim, cfg.groups
        temporal_attention, layer_factory, use_blocks = self._temporal_parts(cfg, self_attention, out_channels)
        self.resnet_attn_blocks = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        ResNetBlock(i, i, t_dim, g, cfg.compression_ratio, up, temporal_layer_factory=layer_factory),
                        make_cross_attention(cfg, i, context_dim),
                        ResNetBlock(i, o, t_dim, g, cfg.compression_ratio, temporal_layer_factory=layer_factory),
                        identity_or(use_blocks, lambda i=i: TemporalResNetBlock(i, t_dim, g, cfg.compression_ratio)),
                        identity_or(use_blocks, lambda i=i: TemporalResNetBlock(i, t_dim, g, cfg.compression_ratio)),
                    ]
                )
                for i, o, up in up_level_blocks(in_channels, cat_dim, out_channels, num_blocks, up_sample)
            ]
        )
        self.temporal_attention_block = temporal_attention
        self.self_attention_block = make_self_attention(cfg, out_channels, self_attention)

    def forward(self, x, time_embed, context, context_mask, temporal: TemporalInfo | None):
        for in_res, attn, out_res, in_temp, out_temp in self.resnet_attn_blocks:
            if temporal is not None:
                x = call_optional(in_temp, x, temporal)
            x = in_res(x, time_embed, temporal)
            x = call_optional(attn, x, time_embed, context, context_mask)
            if temporal is not None:
                x = call_optional(out_temp, x, temporal)
            x = out_res(x, time_embed, temporal)
        if temporal is not None:
            x = call_optional(self.temporal_attention_block, x, temporal)
        return call_optional(self.self_attention_block, x, time_embed)


class KandinskyUNet3D(UNetBase):
    """Keyframe U-Net3D (video mode) and Kandinsky 3 first-frame U-Net (image mode)."""

    config_class = UNet3DConfig

    def __init__(self, config: UNet3DConfig):
        super().__init__()
        self.config = config
        cfg = config
        init = cfg.init_channels or cfg.model_channels
        self.to_time_embed = EmbeddingMLP(init, cfg.time_embed_dim)
        self.feature_pooling = AttentionPolling(cfg.time_embed_dim, cfg.context_dim, cfg.head_dim)
        self.to_temporal_embed = EmbeddingMLP(init, cfg.time_embed_dim)
        self.in_layer = nn.Conv2d(cfg.num_channels, init, kernel_size=3, padding=1)
        self.image_in_layer = nn.Conv2d(cfg.num_channels, init, kernel_size=3, padding=1)
        self._build_levels(cfg, init, DownSampleBlock, UpSampleBlock)
        if cfg.noise_augmentation:
            self.temporal_noise_aug_time_encoding = EmbeddingMLP(init, cfg.time_embed_dim)
        if cfg.motion_score:
            self.temporal_motion_score_encoding = EmbeddingMLP(init, cfg.time_embed_dim)
        # learned null text embedding shipped with the official checkpoint ("null_embedding")
        self.register_buffer("null_embedding", torch.zeros(cfg.context_dim))

    def time_embedding(
        self, timestep: torch.Tensor, rows: int, context: torch.Tensor | None, context_mask: torch.Tensor | None
    ) -> torch.Tensor:
        emb = self.to_time_embed(as_rows(timestep, rows, self.device))
        if context is not None:
            emb = emb + repeat_rows(self.feature_pooling.pooled(context, context_mask), rows)
        return emb

    def temporal_embedding(
        self,
        rows: int,
        num_frames: int,
        frame_index: torch.Tensor | None = None,
        motion_score: torch.Tensor | float | None = None,
        noise_level: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Per-row frame/motion/noise-level embedding added to the time embedding of temporal modules."""
        dev = self.device
        if frame_index is None:
            frame_index = torch.arange(num_frames, device=dev, dtype=torch.float32).repeat(rows // num_frames)
        emb = self.to_temporal_embed(as_rows(frame_index, rows, dev))
        if noise_level is not None:
            if not self.config.noise_augmentation:
                raise ValueError("this U-Net has no noise-augmentation conditioning (config.noise_augmentation=False)")
            emb = emb + self.temporal_noise_aug_time_encoding(as_rows(noise_level, rows, dev))
        if motion_score is not None:
            if not self.config.motion_score:
                raise ValueError("this U-Net has no motion-score conditioning (config.motion_score=False)")
            emb = emb + self.temporal_motion_score_encoding(as_rows(motion_score, rows, dev))
        return emb

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        *,
        num_frames: int | None = None,
        frame_index: torch.Tensor | None = None,
        motion_score: torch.Tensor | float | None = None,
        noise_level: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Predict noise.

        Args:
            sample: (B, num_channels, H, W); in video mode B = branches * num_frames, laid out
                ``(branch frame)``.
            timestep: diffusion step, scalar or (B,).
            context: text embeddings (Bc, L, context_dim) with B a multiple of Bc (each context
                row serves B // Bc consecutive rows), or None.
            context_mask: (Bc, L) bool, True for valid tokens.
            num_frames: None for image mode (first frame), else frames per video.
            frame_index, motion_score, noise_level: per-row (or scalar) temporal conditioning.
        """
        rows = sample.shape[0]
        if num_frames is not None and rows % num_frames:
            raise ValueError(f"batch {rows} is not a multiple of num_frames {num_frames}")
        sample = sample.to(self.dtype)
        if context is not None:
            context = context.to(self.dtype)
        time_embed = self.time_embedding(timestep, rows, context, context_mask)
        temporal = None
        if num_frames is None:
            x = self.image_in_layer(sample)
        else:
            x = self.in_layer(sample)
            temporal_embed = self.temporal_embedding(rows, num_frames, frame_index, motion_score, noise_level)
            temporal = TemporalInfo(time_embed + temporal_embed, num_frames)
        return self._forward_levels(x, time_embed, context, context_mask, temporal)
