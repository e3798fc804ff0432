"""MoVQ image encoder/decoder and the temporal MoVQ video decoder of Kandinsky Video 1.1.

* Image MoVQ (``movq.pt``, 270.6M): encoder -> ``quant_conv`` gives the continuous latent
  (no codebook lookup, no scaling at inference); ``post_quant_conv`` -> decoder, whose norms
  are ``SpatialNorm`` layers modulated by the latent itself.
* Video MoVQ (``video_movq.pt``, decoder 556.6M): the same decoder with, in every ResnetBlock,
  two zero-initialised Conv3d (3,3,3) over the frames of the decoded chunk blended in by
  learned scalars (``temporal_merge1/2``), and a temporal attention block after the mid
  attention and after every attention at the attention resolution.

Attribute names mirror the official ``kandinsky_video/movq.py``. Differences in *how* we
compute (not *what*): the official code loops over samples one at a time; we batch. One
official quirk is kept on purpose because the weights were trained with it: the spatial
attention blocks of the decoder normalise every frame of a chunk with the latent of the
chunk's *first* frame (``attn_norm_uses_first_latent``; it changes nothing for single images).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .dict_config import DictConfig
from .layers import conv_over_frames

# official generator_params keys that only matter for training; accepted and ignored
_IGNORED_OFFICIAL_KEYS = {"dropout", "resamp_with_conv", "give_pre_end", "flicker_augmentation", "temporal_conv_padding"}


@dataclass
class MoVQConfig(DictConfig):
    """Configuration of :class:`MoVQ`; names follow the official ``generator_params``."""

    ch: int = 256
    out_ch: int = 3
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32,)
    in_channels: int = 3
    resolution: int = 256
    z_channels: int = 4
    double_z: bool = False
    add_conv: bool = False
    norm_groups: int = 32
    # temporal (video decoder)
    temporal: bool = False
    temporal_mid_blocks: bool = True
    temporal_kernel_size: tuple[int, int, int] = (3, 3, 3)
    temporal_attention_block: bool = False
    temporal_blocks: bool = False
    build_3D_decoder: bool = False
    # ours
    with_encoder: bool = True
    attn_norm_uses_first_latent: bool = True

    def __post_init__(self) -> None:
        self.ch_mult = tuple(self.ch_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)
        self.temporal_kernel_size = tuple(self.temporal_kernel_size)
        if self.double_z:
            raise ValueError("MoVQConfig.double_z=True is not supported (quant_conv maps z_channels -> z_channels)")
        if self.temporal_blocks or self.build_3D_decoder:
            raise ValueError(
                "MoVQConfig.temporal_blocks / build_3D_decoder are experiments of the official code that the "
                "released video_movq.pt does not use; they are not implemented here"
            )

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def image(cls) -> MoVQConfig:
        """The released image MoVQ (270.6M parameters)."""
        return cls()

    @classmethod
    def video(cls, with_encoder: bool = False) -> MoVQConfig:
        """The released temporal MoVQ decoder (556.6M parameters without the encoder)."""
        return cls(temporal=True, temporal_attention_block=True, with_encoder=with_encoder)

    @classmethod
    def tiny(cls, **overrides: Any) -> MoVQConfig:
        base = dict(ch=16, ch_mult=(1, 1, 2, 2), num_res_blocks=1, attn_resolutions=(4,), resolution=32, norm_groups=4)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_official(cls, d: dict[str, Any], **ours: Any) -> MoVQConfig:
        """Build from the official ``generator_params`` dict (training-only keys are ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - _IGNORED_OFFICIAL_KEYS)
        if unknown:
            raise ValueError(f"unknown official MoVQ config keys: {unknown}")
        return cls(**{k: v for k, v in d.items() if k in known}, **ours)


class SpatialNorm(nn.Module):
    """GroupNorm, optionally modulated by the (nearest-resized) latent: ``norm(f) * conv_y(z) + conv_b(z)``."""

    def __init__(self, f_channels: int, zq_channels: int | None = None, add_conv: bool = False, groups: int = 32):
        super().__init__()
        self.norm_layer = nn.GroupNorm(num_groups=groups, num_channels=f_channels, eps=1e-6, affine=True)
        self.has_zq = zq_channels is not None
        self.add_conv = add_conv and self.has_zq
        if self.has_zq:
            if self.add_conv:
                self.conv = nn.Conv2d(zq_channels, zq_channels, kernel_size=3, padding=1)
            self.conv_y = nn.Conv2d(zq_channels, f_channels, kernel_size=1)
            self.conv_b = nn.Conv2d(zq_channels, f_channels, kernel_size=1)

    def forward(self, f: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        norm_f = self.norm_layer(f)
        if zq is None or not self.has_zq:
            return norm_f
        zq = F.interpolate(zq, size=f.shape[-2:], mode="nearest")
        if self.add_conv:
            zq = self.conv(zq)
        return torch.addcmul(self.conv_b(zq), norm_f, self.conv_y(zq))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class ResnetBlock(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, zq_ch: int | None = None, add_conv: bool = False,
        temporal: bool = False, temporal_kernel_size=(3, 3, 3), groups: int = 32,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = SpatialNorm(in_channels, zq_ch, add_conv, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = SpatialNorm(out_channels, zq_ch, add_conv, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.temporal = temporal
        if temporal:
            pad = tuple(k // 2 for k in temporal_kernel_size)
            self.temporal_merge1 = nn.Parameter(torch.zeros(1))
            self.temporal_projection1 = nn.Conv3d(out_channels, out_channels, temporal_kernel_size, padding=pad)
            self.temporal_merge2 = nn.Parameter(torch.zeros(1))
            self.temporal_projection2 = nn.Conv3d(out_channels, out_channels, temporal_kernel_size, padding=pad)
            for conv in (self.temporal_projection1, self.temporal_projection2):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    @staticmethod
    def _mix(h: torch.Tensor, merge: torch.Tensor, conv: nn.Conv3d, num_frames: int) -> torch.Tensor:
        out = conv_over_frames(h, conv.weight, conv.bias, num_frames)
        m = merge.to(h.dtype)
        return (1 - m) * h + m * out

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None, num_frames: int | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, zq)))
        if self.temporal and num_frames:
            h = self._mix(h, self.temporal_merge1, self.temporal_projection1, num_frames)
        h = self.conv2(F.silu(self.norm2(h, zq)))
        if self.temporal and num_frames:
            h = self._mix(h, self.temporal_merge2, self.temporal_projection2, num_frames)
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class _NormAndConvProjections(nn.Module):
    """The parameters of both attention blocks: a ``SpatialNorm`` and 1x1-conv ``q/k/v/proj_out``
    (with biases). The subclasses differ in what they attend over."""

    def __init__(self, channels: int, zq_ch: int | None = None, add_conv: bool = False, groups: int = 32):
        super().__init__()
        self.norm = SpatialNorm(channels, zq_ch, add_conv, groups)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)


class AttnBlock(_NormAndConvProjections):
    """Single-head spatial self-attention with 1x1-conv projections (with biases)."""

    def __init__(self, channels: int, zq_ch: int | None = None, add_conv: bool = False, groups: int = 32,
                 norm_uses_first_latent: bool = False):
        super().__init__(channels, zq_ch, add_conv, groups)
        self.norm_uses_first_latent = norm_uses_first_latent

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        if zq is not None and self.norm_uses_first_latent:
            zq = zq[:1].expand(x.shape[0], *zq.shape[1:])
        h = self.norm(x, zq)
        b, c, hh, ww = h.shape
        q = self.q(h).flatten(2).transpose(1, 2)[:, None]  # (B, 1, HW, C)
        k = self.k(h).flatten(2).transpose(1, 2)[:, None]
        v = self.v(h).flatten(2).transpose(1, 2)[:, None]
        out = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class TemporalAttnBlock(_NormAndConvProjections):
    """Single-head attention over the frames of a chunk, per pixel.

    Its norm is a SpatialNorm with latent convs (present in the checkpoint) that the official
    decoder calls without a latent, i.e. a plain GroupNorm; we do the same.
    """

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        h = self.norm(x)
        bt, c, hh, ww = h.shape
        t = num_frames

        def seq(y: torch.Tensor) -> torch.Tensor:  # (B*T, C, H, W) -> (B*H*W, 1, T, C)
            return y.view(bt // t, t, c, hh * ww).permute(0, 3, 1, 2).reshape(-1, 1, t, c)

        out = F.scaled_dot_product_attention(seq(self.q(h)), seq(self.k(h)), seq(self.v(h)))
        out = out.view(bt // t, hh * ww, t, c).permute(0, 2, 3, 1).reshape(bt, c, hh, ww)
        return x + self.proj_out(out)


class Encoder(nn.Module):
    def __init__(self, cfg: MoVQConfig):
        super().__init__()
        g = cfg.norm_groups
        self.num_resolutions = len(cfg.ch_mult)
        self.num_res_blocks = cfg.num_res_blocks
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, kernel_size=3, padding=1)
        in_mult = (1, *cfg.ch_mult)
        res = cfg.resolution
        self.down = nn.ModuleList()
        block_in = cfg.ch
        for i in range(self.num_resolutions):
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            block_in = cfg.ch * in_mult[i]
            block_out = cfg.ch * cfg.ch_mult[i]
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, groups=g))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in, groups=g))
            if i != self.num_resolutions - 1:
                level.downsample = Downsample(block_in)
                res //= 2
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, groups=g)
        self.mid.attn_1 = AttnBlock(block_in, groups=g)
        self.mid.block_2 = ResnetBlock(block_in, block_in, groups=g)
        self.norm_out = SpatialNorm(block_in, groups=g)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if i != self.num_resolutions - 1:
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class MOVQDecoder(nn.Module):
    def __init__(self, cfg: MoVQConfig):
        super().__init__()
        g, zq, ac = cfg.norm_groups, cfg.z_channels, cfg.add_conv
        first = cfg.attn_norm_uses_first_latent
        self.num_resolutions = len(cfg.ch_mult)
        self.temporal_attention = cfg.temporal and cfg.temporal_attention_block
        block_in = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, kernel_size=3, padding=1)
        tk = cfg.temporal_kernel_size
        mid_temporal = cfg.temporal and cfg.temporal_mid_blocks
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, zq, ac, mid_temporal, tk, g)
        self.mid.attn_1 = AttnBlock(block_in, zq, ac, g, first)
        if self.temporal_attention:
            self.mid.temporal_attn_1 = TemporalAttnBlock(block_in, zq, ac, g)
        self.mid.block_2 = ResnetBlock(block_in, block_in, zq, ac, mid_temporal, tk, g)
        levels = []
        for i in reversed(range(self.num_resolutions)):
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            level.temporal_attn = nn.ModuleList()
            block_out = cfg.ch * cfg.ch_mult[i]
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, zq, ac, cfg.temporal, tk, g))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in, zq, ac, g, first))
                    if self.temporal_attention:
                        level.temporal_attn.append(TemporalAttnBlock(block_in, zq, ac, g))
            if i != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = SpatialNorm(block_in, zq, ac, g)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor, zq: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_1(h, zq, num_frames)
        h = self.mid.attn_1(h, zq)
        if self.temporal_attention and num_frames:
            h = self.mid.temporal_attn_1(h, num_frames)
        h = self.mid.block_2(h, zq, num_frames)
        for i in reversed(range(self.num_resolutions)):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(h, zq, num_frames)
                if len(level.attn) > 0:
                    h = level.attn[j](h, zq)
                    if self.temporal_attention and num_frames:
                        h = level.temporal_attn[j](h, num_frames)
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h, zq)))


class MoVQ(nn.Module):
    """Image MoVQ (encoder + decoder) or, with ``config.temporal``, the video decoder."""

    config_class = MoVQConfig

    def __init__(self, config: MoVQConfig):
        super().__init__()
        self.config = config
        if config.with_encoder:
            self.encoder = Encoder(config)
            self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, 1)
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, 1)
        self.decoder = MOVQDecoder(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.post_quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.post_quant_conv.weight.device

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> continuous latent (N, z, H/f, W/f)."""
        if not self.config.with_encoder:
            raise RuntimeError("this MoVQ was built without an encoder (MoVQConfig.with_encoder=False)")
        return self.quant_conv(self.encoder(images.to(self.dtype)))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, z, h, w) -> images (N, 3, h*f, w*f) in about [-1, 1].

        With a temporal decoder the N latents are one chunk of consecutive frames.
        """
        latents = latents.to(self.dtype)
        num_frames = latents.shape[0] if self.config.temporal else None
        return self.decoder(self.post_quant_conv(latents), latents, num_frames)
