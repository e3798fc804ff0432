"""Caption throughput: clips/s and output tokens/s by batch size, transformers vs vLLM.

    python bench/caption.py                               # CPU: tiny random Qwen2.5-VL, ~1-2 min
    python bench/caption.py --device cuda --size full     # GPU: Qwen2.5-VL-7B dims, random bf16 weights
    python bench/caption.py --device cuda --size full --model llava_next_video --backend all
    python bench/caption.py --save                        # also write bench/results/caption-<device>.json

The model is built in code from a config with random weights (``--size full``: the
dimensions of the released 7B-class checkpoint of that family; ``tiny``: a CPU toy), so no
weights are downloaded. Every clip generates exactly ``--max-new-tokens`` tokens
(``min_new_tokens = max_new_tokens``; vLLM ``min_tokens``), so speed does not depend on
what random weights happen to say. A timed batch is the whole GPU stage's work for it:
processor (resize, patchify, placeholder expansion, tokenise) + prefill + decode +
detokenise. Frames are 16:9 at the family's processor short side (``--short-side``),
``--frames`` per clip. "x vs b1" compares with batch size 1 of the same backend in the
same run. The prompt is the default "detailed" template; its token count is printed
(our byte-level test tokenizer makes prompts ~4x longer in tokens than a real BPE
tokenizer would: a small overstatement of prefill cost).
Goal (issue): >= 2 clips/s per H100 for a 7B-class model at 8 frames, 128 new tokens.
No assertion on timings anywhere: numbers are printed, never checked.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The repository root goes first even when PYTHONPATH already names it: this folder's own
# caption.py would otherwise shadow the caption package.
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # random_vlm: random-weight VLMs built in code

from random_vlm import SYNTHETIC_FAMILIES, build_random_model, save_random_model  # noqa: E402

from bench.gpu_parts import add_output_flags  # noqa: E402
from caption.backends import TransformersBackend, VLLMBackend, vllm_available  # noqa: E402
from caption.families import FAMILIES  # noqa: E402
from caption.prompts import get_template  # noqa: E402
from caption.sampling import ClipFrames, sample_frame_indices  # noqa: E402

FPS = 24


def synthetic_clip(num_frames: int, short: int, seed: int, clip_seconds: float = 4.0) -> ClipFrames:
    """``num_frames`` 16:9 frames (textured noise) sampled from a ``clip_seconds`` clip."""
    rng = np.random.default_rng(seed)
    h, w = short, int(round(short * 16 / 9))
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(base, 8, 0), 8, 1)[:h, :w]
    frames = np.stack([np.roll(big, 3 * t, axis=1) for t in range(num_frames)])
    total = int(clip_seconds * FPS)
    return ClipFrames(np.ascontiguousarray(frames), frame_indices=sample_frame_indices(total, n=num_frames),
                      total_frames=total, clip_id=f"synthetic-{seed}")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_backend(backend, clips: list[ClipFrames], prompt: str, batch: int, max_new_tokens: int, device: str,
                 warmup: int = 1, min_clips: int = 8, budget_s: float = 60.0) -> dict:
    """Caption ``clips`` in batches of ``batch``; clips/s and output tokens/s over timed batches."""
    batches = [clips[i % len(clips): i % len(clips) + batch] for i in range(0, max(min_clips, batch), batch)]
    batches = [b if len(b) == batch else (clips * ((batch // len(clips)) + 1))[:batch] for b in batches]
    for _ in range(warmup):
        backend.generate(batches[0], prompt, max_new_tokens)
    _sync(device)
    n_clips = n_tokens = 0
    t0 = time.perf_counter()
    for b in batches:
        backend.generate(b, prompt, max_new_tokens)
        n_clips += len(b)
        n_tokens += backend.last_num_output_tokens
        if time.perf_counter() - t0 > budget_s:
            break
    _sync(device)
    dt = time.perf_counter() - t0
    peak = None
    if device.startswith("cuda"):
        import torch

        peak = torch.cuda.max_memory_allocated() / 2**30
    return {"batch": batch, "clips": n_clips, "seconds": dt, "clips_per_s": n_clips / dt,
            "out_tokens_per_s": n_tokens / dt, "out_tokens": n_tokens, "peak_gib": peak}


def device_slug(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(torch.device(device))
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return "cpu"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2_5_vl", choices=SYNTHETIC_FAMILIES, help="family to build")
    ap.add_argument("--size", choices=("tiny", "full"), default=None,
                    help="tiny (CPU toy) or full (7B-class dims); default full on CUDA, tiny on CPU")
    ap.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto")
    ap.add_argument("--backend", choices=("transformers", "vllm", "all"), default="all",
                    help="'all' = transformers, plus vLLM when it is installed and on CUDA")
    ap.add_argument("--frames", type=int, default=8, help="frames per clip")
    ap.add_argument("--short-side", type=int, default=None, help="frame short side (default: the family's)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="fixed output tokens (default 128 GPU, 16 CPU)")
    ap.add_argument("--batch-sizes", default=None, help="comma list (default 1,4,8,16,32 GPU; 1,2,4,8 CPU)")
    ap.add_argument("--min-clips", type=int, default=None, help="clips timed per batch size (default max(32, 2x max batch))")
    ap.add_argument("--budget-s", type=float, default=60.0, help="stop timing a batch size after this long")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa, flash_attention_2, eager)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 for the tiny CPU model, whose ops are too small to "
                         "split; torch's default otherwise)")
    add_output_flags(ap, "bench/results/caption-<device>.json", "one transformers batch (the largest batch timed)")
    args = ap.parse_args(argv)

    import torch
    import transformers

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = device.startswith("cuda")
    size = args.size or ("full" if gpu else "tiny")
    if size == "full" and not gpu:
        print("--size full builds a 7B-class model: run it on a GPU (--device cuda); on CPU use --size tiny",
              file=sys.stderr)
        return 2
    threads = args.threads or (1 if (size == "tiny" and not gpu) else None)
    if threads:
        torch.set_num_threads(threads)
    max_new = args.max_new_tokens or (128 if gpu else 16)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,4,8,16,32" if gpu else "1,2,4,8")).split(",")]
    min_clips = args.min_clips or max(32, 2 * max(batch_sizes))
    family = FAMILIES[args.model]
    short = args.short_side or (family.frame_short_side if size == "full" else 128)
    dtype = torch.bfloat16 if gpu else torch.float32
    prompt = get_template("detailed").text
    clips = [synthetic_clip(args.frames, short, seed=i) for i in range(max(batch_sizes))]

    backends = ["transformers"]
    if args.backend in ("vllm", "all"):
        if vllm_available() and gpu:
            backends.append("vllm")
        elif args.backend == "vllm":
            print("vLLM not available (needs `pip install kvid[vllm]` and a CUDA GPU)", file=sys.stderr)
            return 2
        if args.backend == "vllm":
            backends = ["vllm"]

    info = {
        "family": family.name, "size": size, "device": device, "device_name": device_slug(device),
        "dtype": str(dtype).replace("torch.", ""), "frames": args.frames,
        "frame_size": list(clips[0].frames.shape[1:3]), "max_new_tokens": max_new, "attn": args.attn,
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(), "host": platform.node(),
    }
    results = []
    print(f"caption bench: {family.name} ({size}, random weights) on {device} ({info['dtype']}), "
          f"{args.frames} frames of {info['frame_size'][1]}x{info['frame_size'][0]}, {max_new} new tokens per clip")

    for name in backends:
        t = time.perf_counter()
        if name == "transformers":
            model, processor = build_random_model(family.name, size, device=device, dtype=dtype,
                                                  attn_implementation=args.attn)
            backend = TransformersBackend(model, processor, family, model_name=f"random-{family.name}-{size}",
                                          generation_kwargs={"min_new_tokens": max_new})
            inputs = backend.prepare_inputs(clips[:1], [prompt])
            ids = inputs["input_ids"][0].tolist()
            vid = backend.tokenizer.convert_tokens_to_ids("<image>" if family.name == "smolvlm" else family.video_token)
            n_video = sum(1 for i in ids if i == vid)
            info["input_tokens"] = len(ids)
            info["video_tokens"] = n_video
            n_params = sum(p.numel() for p in model.parameters())
            info["params_b"] = round(n_params / 1e9, 3)
            print(f"  model {n_params / 1e9:.2f} B params, built in {time.perf_counter() - t:.1f} s; input "
                  f"{len(ids)} tokens per clip ({n_video} video, {len(ids) - n_video} text)")
        else:
            path = save_random_model(family.name, tempfile.mkdtemp(prefix="kvid-vllm-"), size, weights=False)
            backend = VLLMBackend(path, family, local_files_only=True, load_format="dummy", min_new_tokens=max_new,
                                  max_model_len=16384, gpu_memory_utilization=0.85)
        print(f"\n  {'backend':<13}{'batch':>6}{'clips':>7}{'seconds':>9}{'clips/s':>9}{'out tok/s':>11}"
              f"{'x vs b1':>9}{'peak GiB':>10}")
        base = None
        for b in batch_sizes:
            try:
                r = time_backend(backend, clips, prompt, b, max_new, device, min_clips=min_clips,
                                 budget_s=args.budget_s)
            except torch.cuda.OutOfMemoryError:
                print(f"  {name:<13}{b:>6}  out of memory")
                torch.cuda.empty_cache()
                break
            base = base or r["clips_per_s"]
            r["backend"] = name
            r["x_vs_b1"] = r["clips_per_s"] / base
            results.append(r)
            peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
            print(f"  {name:<13}{b:>6}{r['clips']:>7}{r['seconds']:>9.2f}{r['clips_per_s']:>9.2f}"
                  f"{r['out_tokens_per_s']:>11.1f}{r['x_vs_b1']:>9.2f}{peak:>10}")
        timed = [r for r in results if r["backend"] == name]
        if args.profile and name == "transformers" and timed:
            from bench.gpu_parts import profile_top_kernels

            b = timed[-1]["batch"]
            batch = (clips * (b // len(clips) + 1))[:b]
            profile_top_kernels(lambda be=backend, bt=batch: be.generate(bt, prompt, max_new), device, args.profile,
                                f"{family.name} {size} {info['dtype']}, batch {b}, {args.frames} frames, "
                                f"{max_new} new tokens: one generate call")
        backend.close()
        del backend
        if gpu:
            torch.cuda.empty_cache()

    best = max(results, key=lambda r: r["clips_per_s"]) if results else None
    if best:
        print(f"\n  best: {best['clips_per_s']:.2f} clips/s ({best['backend']}, batch {best['batch']})"
              + ("" if gpu else "  [CPU toy model: not a GPU figure]"))
    if args.out:
        from bench.gpu_parts import run_info, write_json

        write_json(args.out, {"bench": "caption", "info": {**info, **run_info(device)}, "results": results})
        print(f"  wrote {args.out}")
    if args.save:
        out_dir = os.path.join(ROOT, "bench", "results")
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"caption-{info['device_name']}.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"info": info, "results": results, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, f, indent=2)
        os.replace(tmp, path)
        print(f"  wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
