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

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

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

TemporalType = Literal["conv1d_attn1d_blocks", "conv1d_attn1d_layers", "conv3d_layers"]
TEMPORAL_TYPES = ("conv1d_attn1d_blocks", "conv1d_attn1d_layers", "conv3d_layers")


@dataclass
class UNet3DConfig:
    """Configuration of :class:`KandinskyUNet3D`; field names follow the official ``configs.json``."""

    model_channels: int = 384
    init_channels: int | None = 192
    num_channels: int = 9  # input: 4 latent + 4 first-frame condition + 1 mask
    out_channels: int = 4
    time_embed_dim: int = 1536
    context_dim: int = 4096
    groups: int = 32
    head_dim: int = 64
    expansion_ratio: int = 4
    compression_ratio: int = 2
    dim_mult: tuple[int, ...] = (1, 2, 4, 8)
    num_blocks: tuple[int, ...] = (3, 3, 3, 3)
    add_cross_attention: tuple[bool, ...] = (False, True, True, True)
    add_self_attention: tuple[bool, ...] = (False, True, True, True)
    noise_augmentation: bool = True
    motion_score: bool = True
    temporal_type: TemporalType = "conv1d_attn1d_blocks"

    def __post_init__(self) -> None:
        for name in ("dim_mult", "num_blocks", "add_cross_attention", "add_self_attention"):
            setattr(self, name, tuple(getattr(self, name)))
        n = len(self.dim_mult)
        for name in ("num_blocks", "add_cross_attention", "add_self_attention"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"UNet3DConfig.{name} needs {n} entries (one per level of dim_mult)")
        if any(b < 2 for b in self.num_blocks):
            raise ValueError("UNet3DConfig.num_blocks must be >= 2 per level (the official up path needs 2)")
        if self.temporal_type not in TEMPORAL_TYPES:
            raise ValueError(f"temporal_type must be one of {TEMPORAL_TYPES}, got {self.temporal_type!r}")
        init = self.init_channels or self.model_channels
        for ch in [init, *(self.model_channels * m for m in self.dim_mult)]:
            if ch % self.groups:
                raise ValueError(f"channel count {ch} is not divisible by groups={self.groups}")

    @classmethod
    def kandinsky_video_1_1(cls) -> "UNet3DConfig":
        """The released t2v U-Net (4.149B parameters, 1.110B of them temporal)."""
        return cls()

    @classmethod
    def tiny(cls, **overrides: Any) -> "UNet3DConfig":
        """A few-hundred-thousand-parameter config for CPU tests."""
        base = dict(
            model_channels=16, init_channels=8, time_embed_dim=32, context_dim=16, groups=4, head_dim=8,
            dim_mult=(1, 2, 2, 2), num_blocks=(2, 2, 2, 2),
        )
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNet3DConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown UNet3DConfig fields: {unknown}")
        return cls(**d)


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


class ResNetBlock(nn.Module):
    """Bottleneck of four Blocks (kernels 1, 3, 3, 1) with a resampling shortcut."""

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
        super().__init__()
        kernel_sizes = [1, 3, 3, 1]
        hidden = max(in_channels, out_channels) // compression_ratio
        chans = [(in_channels, hidden), (hidden, hidden), (hidden, hidden), (hidden, out_channels)]
        self.resnet_blocks = nn.ModuleList(
            [
                Block(
                    i, o, time_embed_dim, k, norm_groups, up,
                    temporal_layer_factory(o) if temporal_layer_factory is not None and k == 3 else None,
                )
                for (i, o), k, up in zip(chans, kernel_sizes, up_resolutions)
            ]
        )
        self.shortcut_up_sample = (
            nn.ConvTranspose2d(in_channels, in_channels, kernel_size=2, stride=2) if True in up_resolutions else nn.Identity()
        )
        self.shortcut_projection = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()
        )
        self.shortcut_down_sample = (
            nn.Conv2d(out_channels, out_channels, kernel_size=2, stride=2) if False in up_resolutions else nn.Identity()
        )

    def forward(self, x: torch.Tensor, time_embed: torch.Tensor, temporal: TemporalInfo | None = None) -> torch.Tensor:
        out = x
        for block in self.resnet_blocks:
            out = block(out, time_embed, temporal)
        x = self.shortcut_down_sample(self.shortcut_projection(self.shortcut_up_sample(x)))
        return x + out


class TemporalResNetBlock(nn.Module):
    """Bottleneck of four (CondNorm, SiLU, Conv3d (k,1,1)), k = 1, 3, 3, 1; last conv zero-initialised."""

    def __init__(self, num_channels: int, time_embed_dim: int, norm_groups: int = 32, compression_ratio: int = 2):
        super().__init__()
        hidden = num_channels // compression_ratio
        chans = [(num_channels, hidden), (hidden, hidden), (hidden, hidden), (hidden, num_channels)]
        self.temporal_resnet_blocks = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        ConditionalGroupNorm(norm_groups, i, time_embed_dim),
                        nn.SiLU(),
                        nn.Conv3d(i, o, (k, 1, 1), padding=(k // 2, 0, 0)),
                    ]
                )
                for (i, o), k in zip(chans, (1, 3, 3, 1))
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


def _identity_or(cond: bool, make) -> nn.Module:
    return make() if cond else nn.Identity()


class _LevelMixin:
    config: UNet3DConfig

    def _temporal_parts(self, cfg: UNet3DConfig, self_attention: bool, channels: int):
        """(temporal attention module at this level, factory of per-conv temporal layers, blocks?)."""
        tt = cfg.temporal_type
        t_dim, groups = cfg.time_embed_dim, cfg.groups
        if tt == "conv1d_attn1d_blocks":
            attn = _identity_or(
                self_attention,
                lambda: TemporalAttentionBlock(channels, t_dim, groups, cfg.head_dim, cfg.expansion_ratio),
            )
            return attn, None, True
        kernel = (3, 1, 1) if tt == "conv1d_attn1d_layers" else (3, 3, 3)
        factory = lambda ch: TemporalConvLayer(ch, t_dim, groups, kernel)  # noqa: E731
        attn = _identity_or(
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
        self.self_attention_block = _identity_or(
            self_attention,
            lambda: AttentionBlock(in_channels, t_dim, None, g, cfg.head_dim, cfg.expansion_ratio),
        )
        self.temporal_attention_block, layer_factory, use_blocks = self._temporal_parts(cfg, self_attention, in_channels)
        up_resolutions = [(None,) * 4] * (num_blocks - 1) + [(None, None, False if down_sample else None, None)]
        chans = [(in_channels, out_channels)] + [(out_channels, out_channels)] * (num_blocks - 1)
        self.resnet_attn_blocks = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        ResNetBlock(i, o, t_dim, g, cfg.compression_ratio, temporal_layer_factory=layer_factory),
                        _identity_or(
                            context_dim is not None,
                            lambda o=o: AttentionBlock(o, t_dim, context_dim, g, cfg.head_dim, cfg.expansion_ratio),
                        ),
                        ResNetBlock(o, o, t_dim, g, cfg.compression_ratio, up, temporal_layer_factory=layer_factory),
                        _identity_or(use_blocks, lambda o=o: TemporalResNetBlock(o, t_dim, g, cfg.compression_ratio)),
                        _identity_or(use_blocks, lambda o=o: TemporalResNetBlock(o, t_dim, g, cfg.compression_ratio)),
                    ]
                )
                for (i, o), up in zip(chans, up_resolutions)
            ]
        )

    def forward(self, x, time_embed, context, context_mask, temporal: TemporalInfo | None):
        x = _call_spatial(self.self_attention_block, x, time_embed)
        if temporal is not None:
            x = _call_temporal(self.temporal_attention_block, x, temporal)
        for in_res, attn, out_res, in_temp, out_temp in self.resnet_attn_blocks:
            x = in_res(x, time_embed, temporal)
            if temporal is not None:
                x = _call_temporal(in_temp, x, temporal)
            x = _call_spatial(attn, x, time_embed, context, context_mask)
            x = out_res(x, time_embed, temporal)
            if temporal is not None:
                x = _call_temporal(out_temp, x, temporal)
        return x


class UpSampleBlock(nn.Module, _LevelMixin):
    def __init__(
        self, cfg: UNet3DConfig, in_channels: int, cat_dim: int, out_channels: int, context_dim: int | None,
        num_blocks: int, up_sample: bool, self_attention: bool,
    ):
        super().__init__()
        t_dim, g = cfg.time_embed_dim, cfg.groups
        up_resolutions = [(None, True if up_sample else None, None, None)] + [(None,) * 4] * (num_blocks - 1)
        chans = [(in_channels + cat_dim, in_channels)] + [(in_channels, in_channels)] * (num_blocks - 2)
        chans += [(in_channels, out_channels)]
        temporal_attention, layer_factory, use_blocks = self._temporal_parts(cfg, self_attention, out_channels)
        self.resnet_attn_blocks = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        ResNetBlock(i, i, t_dim, g, cfg.compression_ratio, up, temporal_layer_factory=layer_factory),
                        _identity_or(
                            context_dim is not None,
                            lambda i=i: AttentionBlock(i, t_dim, context_dim, g, cfg.head_dim, cfg.expansion_ratio),
                        ),
                        ResNetBlock(i, o, t_dim, g, cfg.compression_ratio, temporal_layer_factory=layer_factory),
                        _identity_or(use_blocks, lambda i=i: TemporalResNetBlock(i, t_dim, g, cfg.compression_ratio)),
                        _identity_or(use_blocks, lambda i=i: TemporalResNetBlock(i, t_dim, g, cfg.compression_ratio)),
                    ]
                )
                for (i, o), up in zip(chans, up_resolutions)
            ]
        )
        self.temporal_attention_block = temporal_attention
        self.self_attention_block = _identity_or(
            self_attention,
            lambda: AttentionBlock(out_channels, t_dim, None, g, cfg.head_dim, cfg.expansion_ratio),
        )

    def forward(self, x, time_embed, context, context_mask, temporal: TemporalInfo | None):
        for in_res, attn, out_res, in_temp, out_temp in self.resnet_attn_blocks:
            if temporal is not None:
                x = _call_temporal(in_temp, x, temporal)
            x = in_res(x, time_embed, temporal)
            x = _call_spatial(attn, x, time_embed, context, context_mask)
            if temporal is not None:
                x = _call_temporal(out_temp, x, temporal)
            x = out_res(x, time_embed, temporal)
        if temporal is not None:
            x = _call_temporal(self.temporal_attention_block, x, temporal)
        return _call_spatial(self.self_attention_block, x, time_embed)


def _call_spatial(module: nn.Module, x, time_embed, context=None, context_mask=None):
    if isinstance(module, nn.Identity):
        return x
    return module(x, time_embed, context, context_mask)


def _call_temporal(module: nn.Module, x, temporal: TemporalInfo):
    if isinstance(module, nn.Identity):
        return x
    return module(x, temporal)


def _as_rows(value: torch.Tensor | float | int, rows: int, device: torch.device) -> torch.Tensor:
    if not torch.is_tensor(value):
        return torch.full((rows,), float(value), device=device, dtype=torch.float32)
    value = value.to(device=device, dtype=torch.float32).reshape(-1)
    if value.numel() == 1:
        return value.expand(rows)
    return repeat_rows(value, rows)


class KandinskyUNet3D(nn.Module):
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

        dims = [init, *(cfg.model_channels * m for m in cfg.dim_mult)]
        in_out = list(zip(dims[:-1], dims[1:]))
        text_dims = [cfg.context_dim if c else None for c in cfg.add_cross_attention]
        self.num_levels = len(in_out)
        cat_dims: list[int] = []
        self.down_samples = nn.ModuleList()
        for level, ((i, o), nb, td, sa) in enumerate(zip(in_out, cfg.num_blocks, text_dims, cfg.add_self_attention)):
            last = level == self.num_levels - 1
            cat_dims.append(0 if last else o)
            self.down_samples.append(DownSampleBlock(cfg, i, o, td, nb, not last, sa))
        self.up_samples = nn.ModuleList()
        rev = zip(reversed(in_out), reversed(cfg.num_blocks), reversed(text_dims), reversed(cfg.add_self_attention))
        for level, ((o, i), nb, td, sa) in enumerate(rev):
            self.up_samples.append(UpSampleBlock(cfg, i, cat_dims.pop(), o, td, nb, level != 0, sa))
        self.out_layer = nn.Sequential(
            nn.GroupNorm(cfg.groups, init), nn.SiLU(), nn.Conv2d(init, cfg.out_channels, kernel_size=3, padding=1)
        )
        if cfg.noise_augmentation:
            self.temporal_noise_aug_time_encoding = EmbeddingMLP(init, cfg.time_embed_dim)
        if cfg.motion_score:
            self.temporal_motion_score_encoding = EmbeddingMLP(init, cfg.time_embed_dim)
        # learned null text embedding shipped with the official checkpoint ("null_embedding")
        self.register_buffer("null_embedding", torch.zeros(cfg.context_dim))

    @property
    def dtype(self) -> torch.dtype:
        return self.in_layer.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.in_layer.weight.device

    def time_embedding(
        self, timestep: torch.Tensor, rows: int, context: torch.Tensor | None, context_mask: torch.Tensor | None
    ) -> torch.Tensor:
        emb = self.to_time_embed(_as_rows(timestep, rows, self.device))
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
        emb = self.to_temporal_embed(_as_rows(frame_index, rows, dev))
        if noise_level is not None:
            if not self.config.noise_augmentation:
                raise ValueError("this U-Net has no noise-augmentation conditioning (config.noise_augmentation=False)")
            emb = emb + self.temporal_noise_aug_time_encoding(_as_rows(noise_level, rows, dev))
        if motion_score is not None:
            if not self.config.motion_score:
                raise ValueError("this U-Net has no motion-score conditioning (config.motion_score=False)")
            emb = emb + self.temporal_motion_score_encoding(_as_rows(motion_score, rows, dev))
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

        hidden = []
        for level, down in enumerate(self.down_samples):
            x = down(x, time_embed, context, context_mask, temporal)
            if level != self.num_levels - 1:
                hidden.append(x)
        for level, up in enumerate(self.up_samples):
            if level != 0:
                x = torch.cat([x, hidden.pop()], dim=1)
            x = up(x, time_embed, context, context_mask, temporal)
        return self.out_layer(x)
