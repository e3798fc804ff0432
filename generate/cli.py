"""``kvid generate CONFIG.yaml``: run a YAML list of Kandinsky Video 1.1 jobs.

The lead's ``pipelines/cli.py`` mounts this with :func:`add_arguments` / :func:`run`;
``python -m generate.cli CONFIG.yaml`` works on its own too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from .jobs import JobParams, expand_jobs, load_config, run_config

# What the help shows for a parameter whose default is None (its help says what None means).
EXAMPLES = {"seed": 0, "negative_prompt": "blurry, low quality", "motion_levels": "/data/curated"}


def _yaml(value: Any) -> str:
    return f"[{', '.join(map(str, value))}]" if isinstance(value, list) else str(value)


def defaults_block() -> str:
    """The ``defaults:`` lines of the job file's help, one per job parameter, from the job model."""
    lines = []
    for key, f in JobParams.model_fields.items():
        default = f.get_default(call_default_factory=True)
        text = f"    {key}: {_yaml(EXAMPLES[key] if default is None else default)}"
        lines.append(f"{text:<40}# {f.description}" if len(text) < 40 else f"{text}  # {f.description}")
    return "\n".join(lines) + "\n"


EPILOG = """\
job file (YAML, read with yaml.safe_load; relative paths are relative to the file):

  output_dir: out/videos
  weights: /models/KandinskyVideo_1_1   # official t2v.pt, interpolation.pt, t5_projections.pt,
                                        # movq.pt, video_movq.pt (+ configs.json); or a folder
                                        # written by save_pretrained; or random:tiny (a smoke
                                        # test with random weights: 64x64 unless width/height set)
  text_encoder: google/flan-ul2         # hub id or local folder of the T5 encoder (optional)
  motion_levels: /data/curated          # `kvid motion levels` output: maps low/medium/high
                                        # (default: official 1 / 10 / 50 / 100)
  device: auto                          # auto | cuda | cpu
  dtype: auto                           # U-Nets + text encoder: auto (bf16 CUDA, fp32 CPU) | bf16 | fp16 | fp32
  offload: auto                         # auto | none | text_encoder | model
  defaults:                             # the values shown are the defaults; any job may override
""" + defaults_block() + """\
  jobs:
    - name: car                         # text-to-video
      prompt: a red car driving along the beach at sunset
    - name: dog                         # image-to-video: the image replaces the first frame
      image: dog.png
      prompt: a dog running in the snow
      fps: high
      motion: 4.5
    - name: curated                     # prompts + first frames from a curated set
      index: /data/curated              # OUT with index/*.parquet and shards/*.tar
      limit: 4                          # or clip_ids: [...]

outputs: OUT/<name>.mp4 (.gif) and OUT/<name>.json with the effective parameters (seed
included), the resolved motion score and the per-stage timings. A failing job is reported and
the others go on; the exit code is 1 if any job failed, 2 for a bad config.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``kvid generate``."""
    parser.description = (
        "Generate 5.5 s videos with Kandinsky Video 1.1 (text-to-video, image-to-video, or prompts and first "
        "frames from a curated index) from a YAML job file. Command-line flags override the file."
    )
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("config", metavar="CONFIG.yaml", help="job file (format below)")
    parser.add_argument("--out", dest="output_dir", metavar="DIR", help="output folder (overrides output_dir)")
    parser.add_argument("--weights", metavar="DIR", help="weights folder or random:tiny (overrides weights)")
    parser.add_argument("--text-encoder", metavar="PATH_OR_ID", help="T5 encoder folder or hub id")
    parser.add_argument("--motion-levels", metavar="PATH", help="motion_levels.json or the folder holding it")
    parser.add_argument("--device", help="auto | cuda | cuda:N | cpu")
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument(
        "--offload", choices=["auto", "none", "text_encoder", "model"],
        help="model: components wait on the CPU between stages (smaller GPUs); text_encoder: only the encoder",
    )
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the U-Nets and decoder")
    parser.add_argument("--decode-chunk-size", type=int, metavar="N", help="frames per video-decoder chunk")
    parser.add_argument("--seed", type=int, help="seed for every job (overrides the file)")
    parser.add_argument("--num-inference-steps", type=int, metavar="N", help="first-frame / keyframe steps for every job")
    parser.add_argument("--steps", type=int, dest="num_inference_steps", help=argparse.SUPPRESS)  # its old name
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these job names")
    parser.add_argument("--skip-existing", action="store_true", help="skip jobs whose <name>.json exists")
    parser.add_argument("--dry-run", action="store_true", help="validate, list the expanded jobs and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of failing jobs")


def run(args: argparse.Namespace) -> int:
    """Run ``kvid generate``; returns the exit code."""
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO, format="%(message)s")
    try:
        cfg, base = load_config(args.config)
        overrides = {
            k: getattr(args, k) for k in
            ("output_dir", "weights", "text_encoder", "motion_levels", "device", "dtype", "offload", "compile",
             "decode_chunk_size")
            if getattr(args, k, None) is not None
        }
        if overrides:
            # command-line paths are relative to the working directory, not to the YAML
            from pathlib import Path

            for k in ("output_dir", "weights", "text_encoder", "motion_levels"):
                v = overrides.get(k)
                if v and not v.startswith("random:") and Path(v).exists():
                    overrides[k] = str(Path(v).resolve())
            cfg = cfg.model_copy(update=overrides)
        params = {k: getattr(args, k) for k in ("seed", "num_inference_steps") if getattr(args, k) is not None}
        if params:
            cfg.defaults = cfg.defaults.model_copy(update=params)
            for job in cfg.jobs:
                for k in params:
                    if k in job.model_fields_set:
                        setattr(job, k, params[k])
        if args.dry_run:
            for j in expand_jobs(cfg, base):
                status = f"SKIP ({j.skipped})" if j.skipped else j.describe_source()["kind"]
                print(f"{j.name}\t{status}\t{j.params.fps}\t{j.params.width}x{j.params.height}\t{j.prompt[:60]}")
            return 0
        summary = run_config(cfg, base, progress=not args.no_progress, skip_existing=args.skip_existing, only=args.only)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        print(f"kvid generate: error: {e}", file=sys.stderr)
        return 2
    for name in summary.done:
        print(f"done     {name}")
    for name, why in summary.skipped:
        print(f"skipped  {name}: {why}")
    for name, why in summary.failed:
        print(f"FAILED   {name}: {why}", file=sys.stderr)
    return summary.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvid generate")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
