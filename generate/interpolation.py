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

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from .layers import Attention, AttentionPolling, ConditionalGroupNorm, EmbeddingMLP, FeedForward, conv_over_frames, repeat_rows
from .unet import AttentionBlock, _as_rows


@dataclass
class InterpolationUNetConfig:
    """Configuration of :class:`InterpolationUNet3D`; names follow the official ``configs.json``."""

    model_channels: int = 384
    init_channels: int | None = 192
    num_channels: int = 20
    out_channels: int = 12
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

    def __post_init__(self) -> None:
        for name in ("dim_mult", "num_blocks", "add_cross_attention", "add_self_attention", "time_downsample"):
            setattr(self, name, tuple(getattr(self, name)))
        n = len(self.dim_mult)
        for name in ("num_blocks", "add_cross_attention", "add_self_attention", "time_downsample"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"InterpolationUNetConfig.{name} needs {n} entries (one per level)")
        if any(b < 2 for b in self.num_blocks):
            raise ValueError("InterpolationUNetConfig.num_blocks must be >= 2 per level")
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
    def kandinsky_video_1_1(cls) -> "InterpolationUNetConfig":
        """The released interpolation U-Net (3.980B parameters)."""
        return cls()

    @classmethod
    def tiny(cls, **overrides: Any) -> "InterpolationUNetConfig":
        base = dict(
            model_channels=16, init_channels=8, time_embed_dim=32, context_dim=16, groups=4, head_dim=8,
            dim_mult=(1, 2, 2, 2), num_blocks=(2, 2, 2, 2),
        )
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InterpolationUNetConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown InterpolationUNetConfig fields: {unknown}")
        return cls(**d)


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
        if not isinstance(self.temporal_projection_new, nn.Identity):
            x = self.temporal_projection_new(x, seq)
        return self.down_sample(x)


class ResNetBlock(nn.Module):
    def __init__(self, in_channels, out_channels, time_embed_dim, norm_groups=32, compression_ratio=2,
                 up_resolutions=(None, None, None, None), temporal=True):
        super().__init__()
        hidden = max(in_channels, out_channels) // compression_ratio
        chans = [(in_channels, hidden), (hidden, hidden), (hidden, hidden), (hidden, out_channels)]
        self.resnet_blocks = nn.ModuleList(
            [
                Block(i, o, time_embed_dim, k, norm_groups, up, temporal)
                for (i, o), k, up in zip(chans, (1, 3, 3, 1), up_resolutions)
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

    def forward(self, x, time_embed, seq: PairSequence):
        out = x
        for block in self.resnet_blocks:
            out = block(out, time_embed, seq)
        return self.shortcut_down_sample(self.shortcut_projection(self.shortcut_up_sample(x))) + out


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


def _maybe(cond, make):
    return make() if cond else nn.Identity()


class DownSampleBlock(nn.Module):
    def __init__(self, cfg: InterpolationUNetConfig, in_channels, out_channels, context_dim, num_blocks, down_sample,
                 self_attention):
        super().__init__()
        t, g, tmp = cfg.time_embed_dim, cfg.groups, cfg.temporal
        self.self_attention_block = _maybe(
            self_attention, lambda: AttentionBlock(in_channels, t, None, g, cfg.head_dim, cfg.expansion_ratio)
        )
        self.temporal_attention_block = _maybe(
            self_attention and cfg.add_temporal_attention,
            lambda: TemporalAttentionBlock(in_channels, t, g, cfg.head_dim, cfg.expansion_ratio),
        )
        ups = [(None,) * 4] * (num_blocks - 1) + [(None, None, False if down_sample else None, None)]
        chans = [(in_channels, out_channels)] + [(out_channels, out_channels)] * (num_blocks - 1)
        self.resnet_attn_blocks = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        ResNetBlock(i, o, t, g, cfg.compression_ratio, temporal=tmp),
                        _maybe(context_dim is not None,
                               lambda o=o: AttentionBlock(o, t, context_dim, g, cfg.head_dim, cfg.expansion_ratio)),
                        ResNetBlock(o, o, t, g, cfg.compression_ratio, up, temporal=tmp),
                    ]
                )
                for (i, o), up in zip(chans, ups)
            ]
        )

    def forward(self, x, time_embed, context, context_mask, seq):
        if not isinstance(self.self_attention_block, nn.Identity):
            x = self.self_attention_block(x, time_embed)
        if not isinstance(self.temporal_attention_block, nn.Identity):
            x = self.temporal_attention_block(x, time_embed, seq)
        for in_res, attn, out_res in self.resnet_attn_blocks:
            x = in_res(x, time_embed, seq)
            if not isinstance(attn, nn.Identity):
                x = attn(x, time_embed, context, context_mask)
            x = out_res(x, time_embed, seq)
        return x


class UpSampleBlock(nn.Module):
    def __init__(self, cfg: InterpolationUNetConfig, in_channels, cat_dim, out_channels, context_dim, num_blocks,
                 up_sample, self_attention):
        super().__init__()
        t, g, tmp = cfg.time_embed_dim, cfg.groups, cfg.temporal
        ups = [(None, True if up_sample else None, None, None)] + [(None,) * 4] * (num_blocks - 1)
        chans = [(in_channels + cat_dim, in_channels)] + [(in_channels, in_channels)] * (num_blocks - 2)
        chans += [(in_channels, out_channels)]
        self.resnet_attn_blocks = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        ResNetBlock(i, i, t, g, cfg.compression_ratio, up, temporal=tmp),
                        _maybe(context_dim is not None,
                               lambda i=i: AttentionBlock(i, t, context_dim, g, cfg.head_dim, cfg.expansion_ratio)),
                        ResNetBlock(i, o, t, g, cfg.compression_ratio, temporal=tmp),
                    ]
                )
                for (i, o), up in zip(chans, ups)
            ]
        )
        self.self_attention_block = _maybe(
            self_attention, lambda: AttentionBlock(out_channels, t, None, g, cfg.head_dim, cfg.expansion_ratio)
        )
        self.temporal_attention_block = _maybe(
            self_attention and cfg.add_temporal_attention,
            lambda: TemporalAttentionBlock(out_channels, t, g, cfg.head_dim, cfg.expansion_ratio),
        )

    def forward(self, x, time_embed, context, context_mask, seq):
        for in_res, attn, out_res in self.resnet_attn_blocks:
            x = in_res(x, time_embed, seq)
            if not isinstance(attn, nn.Identity):
                x = attn(x, time_embed, context, context_mask)
            x = out_res(x, time_embed, seq)
        if not isinstance(self.self_attention_block, nn.Identity):
            x = self.self_attention_block(x, time_embed)
        if not isinstance(self.temporal_attention_block, nn.Identity):
            x = self.temporal_attention_block(x, time_embed, seq)
        return x


class InterpolationUNet3D(nn.Module):
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
        self.register_buffer("null_embedding", torch.zeros(cfg.context_dim))

    @property
    def dtype(self) -> torch.dtype:
        return self.in_layer.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.in_layer.weight.device

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
        time_embed = self.to_time_embed(_as_rows(timestep, rows, dev))
        if self._merge_perturbation:
            pert = self.perturbation_to_time_embed(_as_rows(perturbation_time, rows, dev))
            merge = self.time_embed_merge.to(time_embed.dtype)
            time_embed = merge * pert + (1 - merge) * time_embed
        if self.config.pass_skip_frames:
            skip = _as_rows(skip_frames, rows, dev).long()
            time_embed = self.skip_merge * self.skip_embeddings(skip) + time_embed
        if context is not None:
            time_embed = time_embed + repeat_rows(self.feature_pooling.pooled(context, context_mask), rows)
        if temporal_mask is None:
            temporal_mask = torch.ones(rows, device=dev)
        seq = PairSequence(num_groups, temporal_mask.to(device=dev, dtype=torch.float32))

        x = self.in_layer(sample)
        hidden = []
        for level, down in enumerate(self.down_samples):
            x = down(x, time_embed, context, context_mask, seq)
            if level != self.num_levels - 1:
                hidden.append(x)
        for level, up in enumerate(self.up_samples):
            if level != 0:
                x = torch.cat([x, hidden.pop()], dim=1)
            x = up(x, time_embed, context, context_mask, seq)
        return self.out_layer(x)
