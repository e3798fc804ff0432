"""The encoder/decoder skeleton shared by the keyframe U-Net (:mod:`generate.unet`) and the
interpolation U-Net (:mod:`generate.interpolation`).

Both are Kandinsky 3 U-Nets: the same levels (``dim_mult``, ``num_blocks``, cross and self
attention per level), the same bottleneck ResNet blocks with a resampling shortcut, the same
skip connections and output layer. They differ in their temporal modules and their time
embedding, which stay in their own modules. Everything here creates its submodules in the
order the two models always did, so attribute names (state-dict keys) and the seeded random
initialisation are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .dict_config import DictConfig
from .layers import repeat_rows

# Kernel sizes of the four Blocks of a ResNet block (1x1 in, two 3x3, 1x1 out).
BOTTLENECK_KERNELS = (1, 3, 3, 1)


@dataclass
class UNetConfigBase(DictConfig):
    """Fields and validation common to both U-Net configs (official names).

    Subclasses add their own fields after these; a subclass that redeclares a field (to change
    its default) keeps the field's position, so ``to_dict`` order is the official one.
    """

    model_channels: int = 384
    init_channels: int | None = 192
    num_channels: int = 9
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

    # fields with one entry per level of dim_mult (JSON gives lists: stored as tuples)
    per_level_fields: ClassVar[tuple[str, ...]] = (
        "dim_mult", "num_blocks", "add_cross_attention", "add_self_attention",
    )

    def __post_init__(self) -> None:
        name_of_config = type(self).__name__
        for name in self.per_level_fields:
            setattr(self, name, tuple(getattr(self, name)))
        n = len(self.dim_mult)
        for name in self.per_level_fields:
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name_of_config}.{name} needs {n} entries (one per level of dim_mult)")
        if any(b < 2 for b in self.num_blocks):
            raise ValueError(f"{name_of_config}.num_blocks must be >= 2 per level (the official up path needs 2)")

    @classmethod
    def tiny(cls, **overrides: Any):
        """A few-hundred-thousand-parameter config for CPU tests."""
        base = dict(
            model_channels=16, init_channels=8, time_embed_dim=32, context_dim=16, groups=4, head_dim=8,
            dim_mult=(1, 2, 2, 2), num_blocks=(2, 2, 2, 2),
        )
        base.update(overrides)
        return cls(**base)


def identity_or(present: bool, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` if the block is present, else an ``nn.Identity`` placeholder.

    The placeholder keeps the official index of the blocks that follow in a ModuleList.
    """
    return make() if present else nn.Identity()


def call_optional(module: nn.Module, x: torch.Tensor, *args: Any) -> torch.Tensor:
    """``module(x, *args)``, or ``x`` unchanged when the module is an absent-block placeholder."""
    if isinstance(module, nn.Identity):
        return x
    return module(x, *args)


def as_rows(value: torch.Tensor | float | int, rows: int, device: torch.device) -> torch.Tensor:
    """A scalar, a (1,) tensor, or one value per group of consecutive rows -> (rows,) fp32."""
    if not torch.is_tensor(value):
        return torch.full((rows,), float(value), device=device, dtype=torch.float32)
    value = value.to(device=device, dtype=torch.float32).reshape(-1)
    if value.numel() == 1:
        return value.expand(rows)
    return repeat_rows(value, rows)


def bottleneck_channels(in_channels: int, out_channels: int, compression_ratio: int) -> list[tuple[int, int]]:
    """(in, out) channels of the four Blocks of a ResNet block, narrowed to max(in, out) / ratio."""
    hidden = max(in_channels, out_channels) // compression_ratio
    return [(in_channels, hidden), (hidden, hidden), (hidden, hidden), (hidden, out_channels)]


class ResNetBlockBase(nn.Module):
    """Four Blocks (built by the subclass, with its temporal layers) plus a resampling shortcut.

    ``up_resolutions[k]`` is True / False / None for Block k upsampling / downsampling / neither;
    the shortcut resamples the same way.
    """

    def __init__(
        self, blocks: list[nn.Module], in_channels: int, out_channels: int, up_resolutions: tuple[bool | None, ...]
    ):
        super().__init__()
        self.resnet_blocks = nn.ModuleList(blocks)
        self.shortcut_up_sample = (
            nn.ConvTranspose2d(in_channels, in_channels, kernel_size=2, stride=2) if True in up_resolutions else nn.Identity()
        )
        self.shortcut_projection = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()
        )
        self.shortcut_down_sample = (
            nn.Conv2d(out_channels, out_channels, kernel_size=2, stride=2) if False in up_resolutions else nn.Identity()
        )

    def forward(self, x: torch.Tensor, time_embed: torch.Tensor, temporal: Any = None) -> torch.Tensor:
        out = x
        for block in self.resnet_blocks:
            out = block(out, time_embed, temporal)
        return self.shortcut_down_sample(self.shortcut_projection(self.shortcut_up_sample(x))) + out


NO_RESAMPLING = (None, None, None, None)


def down_level_blocks(
    in_channels: int, out_channels: int, num_blocks: int, down_sample: bool
) -> list[tuple[int, int, tuple[bool | None, ...]]]:
    """(in, out, up_resolutions) of each resnet-attention block of a down level.

    The first block changes the channel count; ``up_resolutions`` is for the block's second
    ResNet block, and in the last block it halves the resolution (unless this is the last level).
    """
    ups = [NO_RESAMPLING] * (num_blocks - 1) + [(None, None, False if down_sample else None, None)]
    chans = [(in_channels, out_channels)] + [(out_channels, out_channels)] * (num_blocks - 1)
    return [(i, o, up) for (i, o), up in zip(chans, ups)]


def up_level_blocks(
    in_channels: int, cat_dim: int, out_channels: int, num_blocks: int, up_sample: bool
) -> list[tuple[int, int, tuple[bool | None, ...]]]:
    """(in, out, up_resolutions) of each resnet-attention block of an up level.

    The first block takes the skip connection (``cat_dim`` more channels) and ``up_resolutions``
    (for the block's first ResNet block) doubles the resolution (unless this is the first up
    level); the last block changes the channel count.
    """
    ups = [(None, True if up_sample else None, None, None)] + [NO_RESAMPLING] * (num_blocks - 1)
    chans = [(in_channels + cat_dim, in_channels)] + [(in_channels, in_channels)] * (num_blocks - 2)
    chans += [(in_channels, out_channels)]
    return [(i, o, up) for (i, o), up in zip(chans, ups)]


class UNetBase(nn.Module):
    """Levels of a Kandinsky 3 U-Net: ``down_samples``, ``up_samples`` and ``out_layer``.

    Subclasses create their embeddings and ``in_layer``, then call :meth:`_build_levels`; their
    forward computes the input features and embeddings, then calls :meth:`_forward_levels`.
    Down and up level classes share one constructor signature (see ``_build_levels``) and one
    forward signature ``(x, time_embed, context, context_mask, temporal)``.
    """

    config: UNetConfigBase
    in_layer: nn.Conv2d

    def _build_levels(self, cfg: UNetConfigBase, init_channels: int, down_level: type, up_level: type) -> None:
        dims = [init_channels, *(cfg.model_channels * m for m in cfg.dim_mult)]
        in_out = list(zip(dims[:-1], dims[1:]))
        text_dims = [cfg.context_dim if c else None for c in cfg.add_cross_attention]
        self.num_levels = len(in_out)
        cat_dims: list[int] = []  # skip-connection channels, popped by the up path in reverse
        self.down_samples = nn.ModuleList()
        for level, ((i, o), nb, td, sa) in enumerate(zip(in_out, cfg.num_blocks, text_dims, cfg.add_self_attention)):
            last = level == self.num_levels - 1
            cat_dims.append(0 if last else o)
            self.down_samples.append(down_level(cfg, i, o, td, nb, not last, sa))
        self.up_samples = nn.ModuleList()
        rev = zip(reversed(in_out), reversed(cfg.num_blocks), reversed(text_dims), reversed(cfg.add_self_attention))
        for level, ((o, i), nb, td, sa) in enumerate(rev):
            self.up_samples.append(up_level(cfg, i, cat_dims.pop(), o, td, nb, level != 0, sa))
        self.out_layer = nn.Sequential(
            nn.GroupNorm(cfg.groups, init_channels), nn.SiLU(),
            nn.Conv2d(init_channels, cfg.out_channels, kernel_size=3, padding=1),
        )

    def _forward_levels(
        self, x: torch.Tensor, time_embed: torch.Tensor, context: torch.Tensor | None,
        context_mask: torch.Tensor | None, temporal: Any,
    ) -> torch.Tensor:
        """Down path, up path with skip connections, then ``out_layer``."""
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

    @property
    def dtype(self) -> torch.dtype:
        return self.in_layer.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.in_layer.weight.device
