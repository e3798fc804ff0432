"""Building blocks shared by the Kandinsky Video U-Nets.

Attribute names mirror the official ``kandinsky_video`` modules so that official state dicts
load with an identity key mapping (see :mod:`generate.checkpoints`). Implementations are ours:
attention goes through ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory
efficient kernels on CUDA), embeddings are computed in fp32 whatever the module dtype (bf16
cannot represent diffusion timesteps above 256 exactly), and text keys/values are computed once
per distinct context instead of once per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_embedding(x: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) numbers -> (N, dim) fp32 embedding: ``cat(sin(x * f), cos(x * f))``.

    Frequencies ``f_j = exp(-j * log(10000) / (dim/2 - 1))`` as in the official code.
    """
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=x.device, dtype=torch.float32) * -scale)
    args = x.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat((args.sin(), args.cos()), dim=-1)


class SinusoidalPosEmb(nn.Module):
    """Parameter-free sinusoidal embedding (index 0 of the official embedding Sequentials)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding(x, self.dim)


class EmbeddingMLP(nn.Sequential):
    """``Sequential(SinusoidalPosEmb, Linear, SiLU, Linear)``: keys ``1.*`` and ``3.*``.

    The sinusoid is computed in fp32 and cast to the Linear's dtype.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(SinusoidalPosEmb(in_dim), nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        emb = self[0](x).to(self[1].weight.dtype)
        return self[3](self[2](self[1](emb)))


class ConditionalGroupNorm(nn.Module):
    """GroupNorm without affine, modulated by ``(1 + scale, shift)`` from an embedding.

    ``context_mlp = Sequential(SiLU, Linear(emb_dim, 2C))`` is zero-initialised as upstream.
    Works on 4D (N, C, H, W) and 5D inputs; ``emb`` is (N, emb_dim).
    """

    def __init__(self, groups: int, num_channels: int, emb_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, num_channels, affine=False)
        self.context_mlp = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * num_channels))
        nn.init.zeros_(self.context_mlp[1].weight)
        nn.init.zeros_(self.context_mlp[1].bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        params = self.context_mlp(emb)
        params = params.view(*params.shape, *([1] * (x.dim() - 2)))
        scale, shift = params.chunk(2, dim=1)
        return torch.addcmul(shift, self.norm(x), scale + 1.0)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class _AttentionProjections(nn.Module):
    """The parameters of both attention modules: ``to_query/to_key/to_value/output_layer``
    without biases, ``out_channels // head_dim`` heads; queries from ``in_channels``, keys and
    values from ``context_dim``. The subclasses differ in what they attend over."""

    def __init__(self, in_channels: int, out_channels: int, context_dim: int, head_dim: int = 64):
        super().__init__()
        if out_channels % head_dim:
            raise ValueError(f"out_channels {out_channels} must be a multiple of head_dim {head_dim}")
        self.num_heads = out_channels // head_dim
        self.to_query = nn.Linear(in_channels, out_channels, bias=False)
        self.to_key = nn.Linear(context_dim, out_channels, bias=False)
        self.to_value = nn.Linear(context_dim, out_channels, bias=False)
        self.output_layer = nn.Linear(out_channels, out_channels, bias=False)


class Attention(_AttentionProjections):
    """Multi-head attention without biases (``to_query/to_key/to_value/output_layer``).

    ``forward(x, context, context_mask)`` with x (B, N, C_in) and context (Bc, M, C_ctx) where
    ``B`` is a multiple of ``Bc``: consecutive groups of ``B // Bc`` rows of ``x`` share one
    context row (the frames of one guidance branch share its text). The shared keys/values are
    computed once per context row and the queries of a group are attended together, which is
    exactly equivalent to repeating the context per row, at a fraction of the cost.
    ``context_mask`` is (Bc, M) bool, True = attend.
    """

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if context is None:
            context = x
        b, n, _ = x.shape
        bc = context.shape[0]
        if b % bc:
            raise ValueError(f"batch {b} is not a multiple of the context batch {bc}")
        rep = b // bc
        q = self.to_query(x)
        if rep > 1:  # fold the rows that share a context into one longer query sequence
            q = q.reshape(bc, rep * n, q.shape[-1])
        q = _split_heads(q, self.num_heads)
        k = _split_heads(self.to_key(context), self.num_heads)
        v = _split_heads(self.to_value(context), self.num_heads)
        mask = None
        if context_mask is not None:
            mask = context_mask.to(torch.bool)[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = _merge_heads(out)
        if rep > 1:
            out = out.reshape(b, n, out.shape[-1])
        return self.output_layer(out)


class TemporalAttention(_AttentionProjections):
    """Self-attention over frames for every pixel: x is (B, T, N, C)."""

    def __init__(self, in_channels: int, out_channels: int, head_dim: int = 64):
        super().__init__(in_channels, out_channels, in_channels, head_dim)  # self-attention: keys from x too

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, _ = x.shape
        # (B, T, N, C) -> (B*N, T, C): every pixel attends over its own frames
        x = x.transpose(1, 2).reshape(b * n, t, -1)
        q = _split_heads(self.to_query(x), self.num_heads)
        k = _split_heads(self.to_key(x), self.num_heads)
        v = _split_heads(self.to_value(x), self.num_heads)
        out = _merge_heads(F.scaled_dot_product_attention(q, k, v))
        out = self.output_layer(out)
        return out.view(b, n, t, -1).transpose(1, 2)


class AttentionPolling(nn.Module):
    """Adds attention-pooled text to the time embedding (official name, sic: "Polling").

    The query is the mean of the context over its (trimmed) length, padding included, as
    upstream. Returns the pooled vector per context row: (Bc, time_embed_dim).
    """

    def __init__(self, num_channels: int, context_dim: int, head_dim: int = 64):
        super().__init__()
        self.attention = Attention(context_dim, num_channels, context_dim, head_dim)

    def pooled(self, context: torch.Tensor, context_mask: torch.Tensor | None) -> torch.Tensor:
        return self.attention(context.mean(dim=1, keepdim=True), context, context_mask).squeeze(1)


class FeedForward(nn.Sequential):
    """1x1-conv MLP without biases: keys ``0.weight`` and ``2.weight``."""

    def __init__(self, num_channels: int, expansion_ratio: int):
        hidden = expansion_ratio * num_channels
        super().__init__(
            nn.Conv2d(num_channels, hidden, kernel_size=1, bias=False),
            nn.SiLU(),
            nn.Conv2d(hidden, num_channels, kernel_size=1, bias=False),
        )


def repeat_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Repeat each row of ``x`` so that it has ``rows`` rows (rows must be a multiple)."""
    if x.shape[0] == rows:
        return x
    n = x.shape[0]
    if rows % n:
        raise ValueError(f"cannot expand {n} rows to {rows}")
    # expand + reshape: like repeat_interleave, but never computes an output size on the device
    return x.unsqueeze(1).expand(n, rows // n, *x.shape[1:]).reshape(rows, *x.shape[1:])


@dataclass
class TemporalInfo:
    """What temporal modules need: the per-row temporal conditioning and the sequence length.

    ``embed`` is (B, time_embed_dim) = time embedding + frame/motion/noise embedding (keyframe
    U-Net), ``num_frames`` the length of the temporal axis; rows are laid out ``(b t)``.
    """

    embed: torch.Tensor
    num_frames: int


def conv_over_frames(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, num_frames: int
) -> torch.Tensor:
    """A Conv3d (kernel (kt, kh, kw), 'same' zero padding) over rows laid out ``(b t)``, computed
    with one 2D convolution in the frame layout: the ``kt`` temporal taps are stacked along the
    output channels, then the shifted partial results are summed.

    Equivalent to a conv3d over (B, C, T, H, W) with padding (kt//2, kh//2, kw//2) on frames
    stacked as (B*T, C, H, W), without the two transposes of the activations, and on the well-optimised 2D conv kernels.
    """
    o, c, kt, kh, kw = weight.shape
    pad2d = (kh // 2, kw // 2)
    if kt == 1:
        return F.conv2d(x, weight[:, :, 0], bias, padding=pad2d)
    bt, _, h, w = x.shape
    t = num_frames
    stacked = weight.permute(2, 0, 1, 3, 4).reshape(kt * o, c, kh, kw)  # tap-major
    y = F.conv2d(x, stacked, None, padding=pad2d).view(bt // t, t, kt, o, h, w)
    centre = kt // 2
    out = y[:, :, centre].clone()
    for k in range(kt):
        d = k - centre  # output frame i reads input frame i + d through tap k
        if d == 0 or abs(d) >= t:
            continue
        if d > 0:
            out[:, : t - d] += y[:, d:, k]
        else:
            out[:, -d:] += y[:, : t + d, k]
    out = out.view(bt, o, h, w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
