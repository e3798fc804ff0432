#!/usr/bin/env python
"""Speed and memory of Kandinsky Video 1.1 generation (random weights: speed does not depend on them).

    python bench/generate.py --size tiny                      # CPU smoke run (any machine)
    python bench/generate.py --size full --device cuda --dtype bf16 [--compile] [--save]

For every fps preset (low = 12 frames, medium = 45, high = 177; all 5.5 s) it measures seconds
per video and per stage, peak memory (CUDA allocator, or host RSS on CPU), and the U-Nets'
achieved TFLOP/s: model FLOPs counted with ``torch.utils.flop_counter`` on a meta-device copy
(no memory, exact shapes) divided by the measured denoising time, as a fraction of
``--peak-tflops`` (default 989 = H100 SXM dense bf16). A baseline measured in the same run
(eager fp32, guidance branches one at a time) gives speed-up ratios; nothing here asserts a
time. Published anchor for the official code on one A100/H100-class GPU: about 60 s (fps
medium, 8 fps) and 90 s (fps high, 32 fps) per video. Prints a table; ``--save`` also writes
JSON to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_parts import add_output_flags  # noqa: E402
from generate import KandinskyVideoPipeline, num_video_frames  # noqa: E402
from generate.config import FPS_PRESETS, dtype_name, parse_dtype  # noqa: E402
from generate.interpolation import InterpolationUNet3D  # noqa: E402
from generate.movq import MoVQ  # noqa: E402
from generate.params import DEFAULTS  # noqa: E402
from generate.unet import KandinskyUNet3D  # noqa: E402

PUBLISHED_ANCHOR_S = {"medium": 60.0, "high": 90.0}
PROMPT = "a red car driving along the beach at sunset"


_FLOPS_CACHE: dict = {}


def count_flops(module_cls, config, *args, **kwargs) -> int:
    """Model FLOPs of one forward, counted on the meta device (no memory, no compute).

    Memoised on (model, config, input shapes): counting costs seconds of Python per call, and
    every fps preset repeats the first-frame and keyframe shapes.
    """
    key = (module_cls.__name__, repr(config),
           tuple(tuple(a.shape) if torch.is_tensor(a) else a for a in args),
           tuple(sorted((k, tuple(v.shape) if torch.is_tensor(v) else v) for k, v in kwargs.items())))
    if key not in _FLOPS_CACHE:
        _FLOPS_CACHE[key] = _count_flops(module_cls, config, *args, **kwargs)
    return _FLOPS_CACHE[key]


def _count_flops(module_cls, config, *args, **kwargs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = module_cls(config)
    args = [a.to("meta") if torch.is_tensor(a) else a for a in args]
    kwargs = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in kwargs.items()}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        if module_cls is MoVQ:
            model.decode(*args)
        else:
            model(*args, **kwargs)
    return int(counter.get_total_flops())


def unet_flops(pipe: KandinskyVideoPipeline, fps: str, width: int, height: int, num_inference_steps: int,
               interpolation_steps: int, branches: dict[str, int], ctx_len: int) -> dict[str, float]:
    """FLOPs of all U-Net evaluations of one video, per stage (guidance branches as configured)."""
    cfg = pipe.config
    f = cfg.movq.downsample_factor
    h, w = height // f, width // f
    ctx_dim = cfg.unet.context_dim
    T = cfg.num_keyframes
    out = {}
    nb = branches["first_frame"]
    x = torch.empty(nb, cfg.unet.num_channels, 2 * h, 2 * w)
    ctx, mask = torch.empty(nb, ctx_len, ctx_dim), torch.ones(nb, ctx_len, dtype=torch.bool)
    out["first_frame"] = num_inference_steps * count_flops(KandinskyUNet3D, cfg.unet, x, 0.0, ctx, mask)
    nb = branches["keyframes"]
    x = torch.empty(nb * T, cfg.unet.num_channels, h, w)
    ctx, mask = torch.empty(nb, ctx_len, ctx_dim), torch.ones(nb, ctx_len, dtype=torch.bool)
    out["keyframes"] = num_inference_steps * count_flops(KandinskyUNet3D, cfg.unet, x, 0.0, ctx, mask, num_frames=T,
                                                         motion_score=1.0, noise_level=20.0)
    n = T
    for k, _skip in enumerate(FPS_PRESETS[fps]):
        groups, nb = n - 1, branches["interpolation"]
        x = torch.empty(nb * groups, cfg.interpolation_unet.num_channels, h, w)
        ctx, mask = torch.empty(nb, ctx_len, ctx_dim), torch.ones(nb, ctx_len, dtype=torch.bool)
        out[f"interpolation_{k + 1}"] = interpolation_steps * count_flops(
            InterpolationUNet3D, cfg.interpolation_unet, x, 0.0, ctx, mask, num_groups=groups,
            temporal_mask=torch.ones(nb * groups))
        n = 4 * n - 3
    return out


def decoder_flops(pipe: KandinskyVideoPipeline, fps: str, width: int, height: int) -> int:
    f = pipe.config.movq.downsample_factor
    n = num_video_frames(fps, pipe.config.num_keyframes)
    chunks = torch.empty(n, 4, height // f, width // f).chunk(max(1, n // 4))
    per = {}
    total = 0
    for c in chunks:
        if c.shape[0] not in per:
            per[c.shape[0]] = count_flops(MoVQ, pipe.config.video_movq, torch.empty(c.shape))
        total += per[c.shape[0]]
    return total


def peak_memory_gib(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "host_peak_rss"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def run_video(pipe, embeds, fps, args) -> dict:
    t0 = time.perf_counter()
    out = pipe(prompt_embeds=embeds, width=args.width, height=args.height, fps=fps, motion="medium",
               num_inference_steps=args.num_inference_steps, interpolation_steps=args.interpolation_steps, seed=0,
               progress=False)
    seconds = time.perf_counter() - t0
    assert out.num_frames == num_video_frames(fps)
    return {"seconds": seconds, "stages": {k: v["seconds"] for k, v in out.info["stages"].items()}}


def measure(pipe, embeds, fps, args, repeats: int) -> dict:
    runs = [run_video(pipe, embeds, fps, args) for _ in range(repeats)]
    best = min(runs, key=lambda r: r["seconds"])
    return {"seconds": sum(r["seconds"] for r in runs) / len(runs), "best_seconds": best["seconds"],
            "stages": best["stages"], "repeats": len(runs)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["tiny", "full"], default="tiny")
    p.add_argument("--device", default=None, help="default: cpu for tiny, cuda for full")
    p.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 (default: fp32 on CPU, bf16 on CUDA)")
    p.add_argument("--width", type=int, default=None, help="default 64 (tiny) / 512 (full)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--fps", nargs="+", choices=list(FPS_PRESETS), default=list(FPS_PRESETS))
    p.add_argument("--num-inference-steps", type=int, default=DEFAULTS.num_inference_steps, metavar="N",
                   help="first frame and keyframe steps (default: the official %(default)s)")
    p.add_argument("--interpolation-steps", type=int, default=DEFAULTS.interpolation_steps, metavar="N",
                   help="interpolation steps (default: the official %(default)s)")
    # their old names (bench/gpu.sh)
    p.add_argument("--steps", type=int, dest="num_inference_steps", help=argparse.SUPPRESS)
    p.add_argument("--interp-steps", type=int, dest="interpolation_steps", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per preset (after one warm-up run)")
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--baseline", choices=["none", "low", "all"], default=None,
                   help="eager fp32, branches one at a time, same run (default: all for tiny, low for full)")
    p.add_argument("--compile", action="store_true", help="torch.compile U-Nets and decoder (optimised path)")
    p.add_argument("--offload", choices=["none", "model"], default="none")
    p.add_argument("--decode-chunk-size", type=int, default=None)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense peak for the dtype (H100 bf16: 989)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_output_flags(p, "the JSON to bench/results/ too",
                     "one short video (first fps preset, 3 + 2 steps; optimised path, before the baseline)")
    args = p.parse_args(argv)

    device = torch.device(args.device or ("cpu" if args.size == "tiny" else "cuda"))
    dtype = parse_dtype(args.dtype, torch.float32 if device.type == "cpu" else torch.bfloat16)
    args.width = args.width or (64 if args.size == "tiny" else 512)
    args.height = args.height or (64 if args.size == "tiny" else 512)
    baseline = args.baseline or ("all" if args.size == "tiny" else "low")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    t_build = time.perf_counter()
    pipe = KandinskyVideoPipeline.from_random(args.size, device=device, dtype=dtype)
    build_s = time.perf_counter() - t_build
    pipe.decode_chunk_size = args.decode_chunk_size
    if args.offload != "none":
        pipe.enable_offload(args.offload)
    if args.compile:
        pipe.compile()

    params = {k: sum(p.numel() for p in m.parameters()) for k, m in pipe.components.items()}
    # text: encode once (timed), then free the encoder as the CLI does
    reset_peak(device)
    embeds = pipe.encode_prompt(PROMPT)
    t0 = time.perf_counter()
    for _ in range(3):
        embeds = pipe.encode_prompt(PROMPT)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    text_s = (time.perf_counter() - t0) / 3
    text_peak, _ = peak_memory_gib(device)
    pipe.release_text_encoder()
    gc.collect()
    ctx_len = embeds.context.shape[1]

    def branches():  # default guidance weights: every branch has a non-zero coefficient
        return {"first_frame": 2, "keyframes": 3, "interpolation": 2}

    env = {
        "size": args.size, "device": str(device), "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda" else platform.processor() or platform.machine(),
        "dtype": dtype_name(dtype), "width": args.width, "height": args.height,
        "num_inference_steps": args.num_inference_steps, "interpolation_steps": args.interpolation_steps,
        "compile": args.compile, "offload": args.offload,
        "decode_chunk_size": args.decode_chunk_size, "peak_tflops": args.peak_tflops,
        "baseline": "eager fp32, guidance branches one at a time" if baseline != "none" else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "build_seconds": build_s,
        "params": params,
    }

    def write_out() -> None:
        if args.out:
            from bench.gpu_parts import run_info, write_json

            write_json(args.out, {"bench": "generate", "env": {**env, **run_info(str(device))}, "results": results})

    results = []
    if not args.no_warmup:
        run_video(pipe, embeds, "low", args)
    for fps in args.fps:
        reset_peak(device)
        m = measure(pipe, embeds, fps, args, args.repeats)
        peak, peak_kind = peak_memory_gib(device)
        fl = unet_flops(pipe, fps, args.width, args.height, args.num_inference_steps, args.interpolation_steps, branches(),
                        ctx_len)
        denoise_s = sum(v for k, v in m["stages"].items() if k in fl)
        unet_tflop = sum(fl.values()) / 1e12
        achieved = unet_tflop / denoise_s if denoise_s > 0 else float("nan")
        dec_tflop = decoder_flops(pipe, fps, args.width, args.height) / 1e12
        results.append({
            "fps": fps, "frames": num_video_frames(fps), "seconds_per_video": m["seconds"] + text_s,
            "seconds_without_text": m["seconds"], "best_seconds_without_text": m["best_seconds"],
            "text_encode_seconds": text_s, "stages": m["stages"], "repeats": m["repeats"],
            "peak_memory_gib": peak, "peak_memory_kind": peak_kind, "text_encoder_peak_gib": text_peak,
            "unet_tflop": unet_tflop, "unet_tflop_per_stage": {k: v / 1e12 for k, v in fl.items()},
            "unet_seconds": denoise_s, "unet_tflops_achieved": achieved,
            "unet_fraction_of_peak": achieved / args.peak_tflops,
            "decoder_tflop": dec_tflop,
            "decoder_tflops_achieved": dec_tflop / m["stages"]["decode"] if m["stages"].get("decode") else None,
            "published_anchor_seconds": PUBLISHED_ANCHOR_S.get(fps),
        })
        write_out()  # after each preset: a part stopped at its cap keeps what it measured

    if args.profile:
        from bench.gpu_parts import profile_top_kernels

        short = argparse.Namespace(**{**vars(args), "num_inference_steps": min(args.num_inference_steps, 3),
                                      "interpolation_steps": min(args.interpolation_steps, 2)})
        run_video(pipe, embeds, args.fps[0], short)  # warm-up at these step counts
        profile_top_kernels(lambda: run_video(pipe, embeds, args.fps[0], short), str(device), args.profile,
                            f"generate {args.size} {dtype_name(dtype)} {args.width}x{args.height} fps {args.fps[0]}, "
                            f"{short.num_inference_steps} + {short.interpolation_steps} steps, compile={args.compile}: one video")

    if baseline != "none":
        pipe.to(dtype=torch.float32)
        pipe.batch_guidance = False
        if args.compile:  # the baseline is eager
            for m in (pipe.unet, pipe.interpolation_unet, pipe.video_movq.decoder):
                m._compiled_call_impl = None
        for r in results:
            if baseline == "low" and r["fps"] != "low":
                continue
            b = run_video(pipe, embeds, r["fps"], args)
            r["baseline_seconds_without_text"] = b["seconds"]
            r["speedup_vs_baseline"] = b["seconds"] / r["seconds_without_text"]

    print_table(env, results)
    if args.out:
        write_out()
        print(f"\nwrote {args.out}")
    if args.save:
        out_dir = Path(__file__).resolve().parent / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"generate-{args.size}-{device.type}-{dtype_name(dtype)}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps({"env": env, "results": results}, indent=2))
        print(f"\nwrote {path}")
    return 0


def print_table(env: dict, results: list[dict]) -> None:
    print(f"kvid generate bench: size={env['size']} device={env['device']} ({env['device_name']}) dtype={env['dtype']} "
          f"{env['width']}x{env['height']} steps={env['num_inference_steps']}/{env['interpolation_steps']} "
          f"compile={env['compile']} "
          f"torch={env['torch']} threads={env['threads']}")
    print("params: " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in env["params"].items()))
    head = (f"{'fps':<7}{'frames':>7}{'s/video':>9}{'text':>7}{'first':>8}{'keyfr':>8}{'interp':>8}{'decode':>8}"
            f"{'peak GiB':>10}{'UNet TFLOP':>12}{'TFLOP/s':>10}{'%peak':>11}{'base s':>8}{'speedup':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        st = r["stages"]
        interp = sum(v for k, v in st.items() if k.startswith("interpolation"))
        first = st.get("first_frame", 0) + st.get("image_movq", 0)
        base = r.get("baseline_seconds_without_text")
        base_s = f"{base:.2f}" if base else "-"
        speed = f"{r['speedup_vs_baseline']:.2f}x" if base else "-"
        print(f"{r['fps']:<7}{r['frames']:>7}{r['seconds_per_video']:>9.2f}{r['text_encode_seconds']:>7.2f}"
              f"{first:>8.2f}{st.get('keyframes', 0):>8.2f}{interp:>8.2f}{st.get('decode', 0):>8.2f}"
              f"{r['peak_memory_gib']:>10.2f}{r['unet_tflop']:>12.4f}{r['unet_tflops_achieved']:>10.4f}"
              f"{100 * r['unet_fraction_of_peak']:>10.3g}%"
              f"{base_s:>8}{speed:>9}")
    kind = results[0]["peak_memory_kind"] if results else ""
    print(f"peak memory: {kind}; s/video includes text encoding; '%peak' = U-Net TFLOP/s / --peak-tflops "
          f"({env['peak_tflops']}); speedup = baseline ({env['baseline']}) / optimised, same run.")
    if env["size"] == "full":
        print("published anchor (official code): ~60 s (medium, 8 fps), ~90 s (high, 32 fps) per video; "
              "goal: <= 30 s at high on one H100, <= 40 GB peak, >= 40% of bf16 peak in the U-Net.")


if __name__ == "__main__":
    sys.exit(main())
