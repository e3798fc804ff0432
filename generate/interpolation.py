"""Interpolation U-Net3D of Kandinsky Video 1.1: predicts 3 latent frames between two keyframes.

Input rows are keyframe *pairs*: ``cat([left (4), noisy middle frames (12), right (4)])`` = 20
channels, output 12 channels = 3 frames of 4 latent channels. The temporal axis of this model is
the sequence of pairs (``num_groups`` = keyframes - 1): rows are laid out ``(branch group)``
and every temporal layer mixes neighbouring *pairs*:

* each convolution of every ResNet block is followed by ``TemporalConv3D``: a zero-initialised
  Conv3d (3,1,1) blended in by a learned scalar times a per-row temporal mask
  (``x = (1 - m) x + m conv(x)``, ``m = temporal_merge * temporal_mask``);
* each level with self-attention has a temporal self-attention block over the pair sequence,
  blended the same way (``temporal_merge1`` for attention, ``temporal_merge2`` for its FFN).

The time embedding is ``to_time_embed(t)`` merged with the conditioning-frame perturbation
time by a learned scalar, plus ``skip_merge * skip_embeddings(skip_frames)`` and the
attention-pooled text. Attribute names mirror the official ``unet_interpolation.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .layers import Attention, AttentionPolling, ConditionalGroupNorm, EmbeddingMLP, FeedForward, conv_over_frames, repeat_rows
from .unet import make_cross_attention, make_self_attention
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


@dataclass
class InterpolationUNetConfig(UNetConfigBase):
    """Configuration of :class:`InterpolationUNet3D`; names follow the official ``configs.json``.

    The fields common to both U-Nets (channels, levels, attention per level) are in
    :class:`~generate.unet_base.UNetConfigBase`.
    """

    num_channels: int = 20  # input: left keyframe (4) + 3 noisy middle frames (12) + right keyframe (4)
    out_channels: int = 12  # 3 frames of 4 latent channels
    time_downsample: tuple[bool, ...] = (False, False, False, False)
    temporal: bool = True
    use_perturbation_time_embed: bool = True
    merge_perturbation_time_with_diffusion_time: bool = True
    merge_perturbation_time_with_context: bool = False
    pass_skip_frames: bool = True
    temporal_type: str = "conv3D"
    add_new_temporal_params: bool = False
    add_temporal_attention: bool = True
    num_skip_embeddings: int = 20

    per_level_fields: ClassVar[tuple[str, ...]] = (*UNetConfigBase.per_level_fields, "time_downsample")

    def __post_init__(self) -> None:
        super().__post_init__()
        unsupported = []
        if any(self.time_downsample):
            unsupported.append("time_downsample")
        if self.add_new_temporal_params:
            unsupported.append("add_new_temporal_params")
        if self.merge_perturbation_time_with_context:
            unsupported.append("merge_perturbation_time_with_context")
        if unsupported:
            raise ValueError(
                f"InterpolationUNetConfig options {unsupported} are training experiments of the official code that "
                "the released interpolation.pt does not use; they are not implemented here"
            )

    @classmethod
    def kandinsky_video_1_1(cls) -> InterpolationUNetConfig:
        """The released interpolation U-Net (3.980B parameters)."""
        return cls()


@dataclass
class PairSequence:
    """Temporal axis of the interpolation U-Net: ``num_groups`` pairs per branch, per-row mask (B,)."""

    num_groups: int
    mask: torch.Tensor


class TemporalConv3D(nn.Module):
    """``(1 - m) x + m Conv3d(3,1,1)(x)`` over the pair sequence, ``m = temporal_merge * mask``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.temporal_merge = nn.Parameter(torch.zeros(1))
        self.temporal_projection = nn.Conv3d(in_channels, out_channels, (3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.temporal_projection.weight)
        nn.init.zeros_(self.temporal_projection.bias)

    def forward(self, x: torch.Tensor, seq: PairSequence) -> torch.Tensor:
        out = conv_over_frames(x, self.temporal_projection.weight, self.temporal_projection.bias, seq.num_groups)
        m = (self.temporal_merge * seq.mask)[:, None, None, None].to(x.dtype)
        return (1 - m) * x + m * out


class Block(nn.Module):
    """Kandinsky 3 Block with a ``TemporalConv3D`` after the projection (``temporal_projection_new``)."""

    def __init__(self, in_channels, out_channels, time_embed_dim, kernel_size=3, norm_groups=32, up_resolution=None,
                 temporal=True):
        super().__init__()
        self.group_norm = ConditionalGroupNorm(norm_groups, in_channels, time_embed_dim)
        self.activation = nn.SiLU()
        self.up_sample = (
            nn.ConvTranspose2d(in_channels, in_channels, kernel_size=2, stride=2) if up_resolution is True else nn.Identity()
        )
        self.projection = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=0 if kernel_size == 1 else 1)
        self.temporal_projection_new = TemporalConv3D(out_channels, out_channels) if temporal else nn.Identity()
        self.down_sample = (
            nn.Conv2d(out_channels, out_channels, kernel_size=2, stride=2) if up_resolution is False else nn.Identity()
        )

    def forward(self, x, time_embed, seq: PairSequence):
        x = self.activation(self.group_norm(x, time_embed))
        x = self.projection(self.up_sample(x))
        x = call_optional(self.temporal_projection_new, x, seq)
        return self.down_sample(x)


class ResNetBlock(ResNetBlockBase):
    """Bottleneck of four Blocks (kernels 1, 3, 3, 1), each with its ``TemporalConv3D``, and a resampling shortcut."""

    def __init__(self, in_channels, out_channels, time_embed_dim, norm_groups=32, compression_ratio=2,
                 up_resolutions=(None, None, None, None), temporal=True):
        chans = bottleneck_channels(in_channels, out_channels, compression_ratio)
        blocks = [
            Block(i, o, time_embed_dim, k, norm_groups, up, temporal)
            for (i, o), k, up in zip(chans, BOTTLENECK_KERNELS, up_resolutions)
        ]
        super().__init__(blocks, in_channels, out_channels, up_resolutions)


class TemporalAttentionBlock(nn.Module):
    """Self-attention over the pair sequence per pixel + FFN, each blended by a learned scalar x mask."""

    def __init__(self, num_channels, time_embed_dim, norm_groups=32, head_dim=64, expansion_ratio=4):
        super().__init__()
        self.in_norm = ConditionalGroupNorm(norm_groups, num_channels, time_embed_dim)
        self.attention = Attention(num_channels, num_channels, num_channels, head_dim)
        self.out_norm = ConditionalGroupNorm(norm_groups, num_channels, time_embed_dim)
        self.feed_forward = FeedForward(num_channels, expansion_ratio)
        self.temporal_merge1 = nn.Parameter(torch.zeros(1))
        self.temporal_merge2 = nn.Parameter(torch.zeros(1))

    def forward(self, x, time_embed, seq: PairSequence):
        bt, c, h, w = x.shape
        t = seq.num_groups
        out = self.in_norm(x, time_embed)
        out = out.view(bt // t, t, c, h * w).permute(0, 3, 1, 2).reshape(-1, t, c)  # ((b h w), t, c)
        out = self.attention(out)
        out = out.view(bt // t, h * w, t, c).permute(0, 2, 3, 1).reshape(bt, c, h, w)
        m1 = (self.temporal_merge1 * seq.mask)[:, None, None, None].to(x.dtype)
        x = (1 - m1) * x + m1 * out
        out = self.feed_forward(self.out_norm(x, time_embed))
        m2 = (self.temporal_merge2 * seq.mask)[:, None, None, None].to(x.dtype)
        return (1 - m2) * x + m2 * out


class DownSampleBlock(nn.Module):
    def __init__(self, cfg: InterpolationUNetConfig, in_channels, out_channels, context_dim, num_blocks, down_sample,
                 self_attention):
        super().__init__()
        t, g, tmp = cfg.time_embed_dim, cfg.groups, cfg.temporal
        self.self_attention_block = make_self_attention(cfg, in_channels, self_attention)
        self.temporal_attention_block = identity_or(
            self_attention and cfg.add_temporal_attention,
            lambda: TemporalAttentionBlock(in_channels, t, g, cfg.head_dim, cfg.expansion_ratio),
        )
        self.resnet_attn_blocks = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        ResNetBlock(i, o, t, g, cfg.compression_ratio, temporal=tmp),
                        make_cross_attention(cfg, o, context_dim),
                        ResNetBlock(o, o, t, g, cfg.compression_ratio, up, temporal=tmp),
                    ]
                )
                for i, o, up in down_level_blocks(in_channels, out_channels, num_blocks, down_sample)
            ]
        )

    def forward(self, x, time_embed, context, context_mask, seq):
        x = call_optional(self.self_attention_block, x, time_embed)
        x = call_optional(self.temporal_attention_block, x, time_embed, seq)
        for in_res, attn, out_res in self.resnet_attn_blocks:
            x = in_res(x, time_embed, seq)
            x = call_optional(attn, x, time_embed, context, context_mask)
            x = out_res(x, time_embed, seq)
        return x


class UpSampleBlock(nn.Module):
    def __init__(self, cfg: InterpolationUNetConfig, in_channels, cat_dim, out_channels, context_dim, num_blocks,
                 up_sample, self_attention):
        super().__init__()
        t, g, tmp = cfg.time_embed_dim, cfg.groups, cfg.temporal
        self.resnet_attn_blocks = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        ResNetBlock(i, i, t, g, cfg.compression_ratio, up, temporal=tmp),
                        make_cross_attention(cfg, i, context_dim),
                        ResNetBlock(i, o, t, g, cfg.compression_ratio, temporal=tmp),
                    ]
                )
                for i, o, up in up_level_blocks(in_channels, cat_dim, out_channels, num_blocks, up_sample)
            ]
        )
        self.self_attention_block = make_self_attention(cfg, out_channels, self_attention)
        self.temporal_attention_block = identity_or(
            self_attention and cfg.add_temporal_attention,
            lambda: TemporalAttentionBlock(out_channels, t, g, cfg.head_dim, cfg.expansion_ratio),
        )

    def forward(self, x, time_embed, context, context_mask, seq):
        for in_res, attn, out_res in self.resnet_attn_blocks:
            x = in_res(x, time_embed, seq)
            x = call_optional(attn, x, time_embed, context, context_mask)
            x = out_res(x, time_embed, seq)
        x = call_optional(self.self_attention_block, x, time_embed)
        return call_optional(self.temporal_attention_block, x, time_embed, seq)


class InterpolationUNet3D(UNetBase):
    config_class = InterpolationUNetConfig

    def __init__(self, config: InterpolationUNetConfig):
        super().__init__()
        self.config = cfg = config
        init = cfg.init_channels or cfg.model_channels
        self.to_time_embed = EmbeddingMLP(init, cfg.time_embed_dim)
        self._merge_perturbation = cfg.use_perturbation_time_embed and cfg.merge_perturbation_time_with_diffusion_time
        if self._merge_perturbation:
            self.perturbation_to_time_embed = EmbeddingMLP(init, cfg.time_embed_dim)
            self.time_embed_merge = nn.Parameter(torch.zeros(1))
        if cfg.pass_skip_frames:
            self.skip_merge = nn.Parameter(torch.zeros(1))
            self.skip_embeddings = nn.Embedding(cfg.num_skip_embeddings, cfg.time_embed_dim)
        self.feature_pooling = AttentionPolling(cfg.time_embed_dim, cfg.context_dim, cfg.head_dim)
        self.in_layer = nn.Conv2d(cfg.num_channels, init, kernel_size=3, padding=1)
        self._build_levels(cfg, init, DownSampleBlock, UpSampleBlock)
        self.register_buffer("null_embedding", torch.zeros(cfg.context_dim))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        *,
        num_groups: int,
        skip_frames: torch.Tensor | int = 3,
        perturbation_time: torch.Tensor | float = 0.0,
        temporal_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict (v-prediction) the 3 middle frames of every pair.

        Args:
            sample: (B, 20, H, W) = ``cat([left, noisy middle, right])`` per pair; B = branches *
                num_groups, laid out ``(branch group)``.
            context: (Bc, L, D) text, each row serving B // Bc consecutive rows; mask (Bc, L).
            num_groups: pairs per branch (the temporal axis).
            skip_frames: number of frames missing between the pair's keyframes, embedded by
                ``skip_embeddings``: 3 for the first pass (medium fps), 1 for the second (high fps).
            perturbation_time: noise level of the conditioning frames (0 at inference).
            temporal_mask: (B,) 1 to enable temporal layers on a row, 0 to disable (the
                unconditional guidance branch); default all ones.
        """
        rows = sample.shape[0]
        if rows % num_groups:
            raise ValueError(f"batch {rows} is not a multiple of num_groups {num_groups}")
        dev = self.device
        sample = sample.to(self.dtype)
        if context is not None:
            context = context.to(self.dtype)
        time_embed = self.to_time_embed(as_rows(timestep, rows, dev))
        if self._merge_perturbation:
            pert = self.perturbation_to_time_embed(as_rows(perturbation_time, rows, dev))
            merge = self.time_embed_merge.to(time_embed.dtype)
            time_embed = merge * pert + (1 - merge) * time_embed
        if self.config.pass_skip_frames:
            skip = as_rows(skip_frames, rows, dev).long()
            time_embed = self.skip_merge * self.skip_embeddings(skip) + time_embed
        if context is not None:
            time_embed = time_embed + repeat_rows(self.feature_pooling.pooled(context, context_mask), rows)
        if temporal_mask is None:
            temporal_mask = torch.ones(rows, device=dev)
        seq = PairSequence(num_groups, temporal_mask.to(device=dev, dtype=torch.float32))

        return self._forward_levels(self.in_layer(sample), time_embed, context, context_mask, seq)
