#!/usr/bin/env python
"""Decode error of the MoVQs in bf16 (and fp16) against fp32, to choose their default dtype.

    python bench/movq_precision.py                 # parity fixture + full-size random weights (CPU)
    python bench/movq_precision.py --latent 16 --frames 5 --device cuda

Two sets of weights: the parity fixture (tests/fixtures/kv11_parity: tiny config, the official
code's fp32 outputs alongside), and the released architecture (MoVQConfig.image() / .video(),
full width and depth) with random weights, decoding a small latent (``--latent`` square, the
decoder's cost grows with the area, its error does not). Each decoder decodes the same latents
in fp32 and in the low-precision dtype (weights cast, as ``pipe.to(movq_dtype=...)`` does).
Reported: max and RMS error relative to the fp32 output's max / RMS, and the error in uint8
levels after the official conversion (``(x + 1) / 2``, clamp, x255, truncate), with the output
first scaled by 1 / max|fp32| so that random-weight outputs fill [-1, 1] like images do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generate import KandinskyVideoPipeline  # noqa: E402
from generate.config import parse_dtype  # noqa: E402
from generate.loading import _materialize_random_  # noqa: E402
from generate.movq import MoVQ, MoVQConfig  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "kv11_parity"


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0).mul(255).to(torch.uint8)


@torch.no_grad()
def compare(movq: MoVQ, latents: torch.Tensor, dtype: torch.dtype, device: torch.device) -> dict:
    movq.to(device=device, dtype=torch.float32)
    t0 = time.perf_counter()
    ref = movq.decode(latents.to(device)).float()
    t_ref = time.perf_counter() - t0
    movq.to(dtype=dtype)
    t0 = time.perf_counter()
    low = movq.decode(latents.to(device)).float()
    t_low = time.perf_counter() - t0
    movq.to(dtype=torch.float32)
    err = (low - ref).abs()
    scale = ref.abs().max()
    u_ref, u_low = to_uint8(ref / scale), to_uint8(low / scale)
    du = (u_ref.int() - u_low.int()).abs()
    return {
        "max_rel": float(err.max() / scale),
        "rms_rel": float(err.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()),
        "uint8_max": int(du.max()),
        "uint8_mean": float(du.float().mean()),
        "uint8_differ_pct": float((du > 0).float().mean() * 100),
        "uint8_over_2_pct": float((du > 2).float().mean() * 100),
        "seconds_fp32": t_ref,
        "seconds_low": t_low,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="bf16", help="low precision to compare with fp32 (bf16 or fp16)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--latent", type=int, default=8, help="latent side for the full-size decoders")
    ap.add_argument("--frames", type=int, default=4, help="frames per video-decoder chunk (official: 4-5)")
    ap.add_argument("--skip-full", action="store_true", help="only the parity fixture")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dtype, dev = parse_dtype(args.dtype), torch.device(args.device)
    rows = {}

    from safetensors.torch import load_file

    pipe = KandinskyVideoPipeline.from_official(FIXTURE, load_text_encoder=False, dtype="fp32")
    cases = load_file(str(FIXTURE / "cases.safetensors"))
    rows["fixture image MoVQ"] = compare(pipe.movq, cases["movq.latent"], dtype, dev)
    rows["fixture video MoVQ"] = compare(pipe.video_movq, cases["video_movq.latent"], dtype, dev)

    if not args.skip_full:
        g = torch.Generator().manual_seed(args.seed)
        for name, cfg, n in (("full-size image MoVQ (random)", MoVQConfig.image(), 1),
                             ("full-size video MoVQ (random)", MoVQConfig.video(), args.frames)):
            with torch.device("meta"):
                movq = MoVQ(cfg)
            movq = _materialize_random_(movq, torch.device("cpu"), torch.float32, args.seed).eval()
            latents = torch.randn(n, cfg.z_channels, args.latent, args.latent, generator=g)
            rows[name] = compare(movq, latents, dtype, dev)
            del movq

    print(f"{args.dtype} vs fp32 decode on {dev} (torch {torch.__version__})")
    head = ("max rel", "rms rel", "u8 max", "u8 mean", "differ%", ">2 lv%")
    print(f"{'decoder':32s} " + " ".join(f"{h:>9s}" for h in head))
    for name, r in rows.items():
        print(f"{name:32s} {r['max_rel']:9.2e} {r['rms_rel']:9.2e} {r['uint8_max']:9d} {r['uint8_mean']:9.3f} "
              f"{r['uint8_differ_pct']:9.2f} {r['uint8_over_2_pct']:9.2f}")
    print(json.dumps({"dtype": args.dtype, "device": str(dev), "latent": args.latent, "frames": args.frames,
                      "rows": rows}))


if __name__ == "__main__":
    main()
