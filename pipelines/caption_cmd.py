"""`kvid caption DIR --model ID_OR_PATH`: (re)caption the clips of a curated folder."""

from __future__ import annotations

import argparse

from pipelines.config import ConfigError

EPILOG = """\
examples:
  kvid caption data/ --model llava-hf/LLaVA-NeXT-Video-7B-hf
  kvid caption data/ --model Qwen/Qwen2.5-VL-7B-Instruct --prompt camera --frames 16
  kvid caption data/ --model /models/llava-onevision-qwen2-0.5b-ov-hf --device cpu --batch-size 2
  kvid caption data/ --model MODEL --prompt "Describe the {num_frames} frames of this {duration_s:.0f} s clip."

Clips are read from the shards (no re-encode); captions go into the index, the shard .txt
and the shard .json (with caption_model and the prompt hash). The new version is published
only when every shard is done; the previous one moves to DIR/versions/. A killed run resumes
when started again with the same options. Degenerate output (empty, repetitive, a refusal)
makes the clip a `caption_failed` reject instead of storing garbage.

Offline: pass a local folder written by `huggingface-cli download <id>`; a hub id that is
not in the local cache stops the run at start with that advice.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Caption (or recaption) the clips of a curated folder with a video VLM."
    parser.epilog = EPILOG
    parser.add_argument("dir", metavar="DIR", help="output folder of `kvid curate`")
    parser.add_argument(
        "--model", "--caption-model", dest="caption_model", required=True, help="hub id or local folder of the VLM"
    )
    parser.add_argument(
        "--prompt", "--caption-prompt", dest="caption_prompt", help="template name (detailed, short, camera) or text"
    )
    parser.add_argument("--frames", "--caption-frames", dest="caption_frames", help="frames sampled per clip (default 8)")
    parser.add_argument(
        "--max-new-tokens", "--caption-max-new-tokens", dest="caption_max_new_tokens", help="caption length limit (default 128)"
    )
    parser.add_argument(
        "--batch-size", "--caption-batch-size", dest="caption_batch_size", help="clips per generation batch (default 8)"
    )
    parser.add_argument("--device", "--caption-device", dest="caption_device", help="auto, cpu or cuda")
    parser.add_argument("--workers", "--caption-workers", dest="caption_workers", help="caption actors (default: GPUs, else 1)")
    parser.add_argument("--ray-address", dest="ray_address", help="Ray cluster address (default: a local Ray)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pipelines.graph import add_stages, model_stages, on_cluster
    from pipelines.preflight import preflight
    from pipelines.rewrite import folder_config, rewrite

    keys = ("caption_model", "caption_prompt", "caption_frames", "caption_max_new_tokens", "caption_batch_size",
            "caption_device", "caption_workers", "ray_address")
    # Motion is not redone here: the model check must not load RAFT.
    cfg = folder_config(args.dir, args, keys, motion_backend="none")
    if not cfg.caption_enabled:
        raise ConfigError("--model none would remove the captions; give a model id or folder")
    preflight(cfg)
    settings = {k: getattr(cfg, k) for k in ("caption_model", "caption_prompt", "caption_frames", "caption_max_new_tokens")}
    summary = rewrite(args.dir, cfg, "caption", settings, lambda ds: add_stages(ds, model_stages(on_cluster(cfg))),
                      show_progress=False if args.quiet else None, config_updates=settings)
    print(
        f"kvid caption: {summary['clips']} clips captioned ({summary['new_rejects']} caption_failed) in "
        f"{summary['parts_rewritten']} shards ({summary['parts_already_done']} done earlier), {summary['wall_s']:.1f} s; "
        f"previous version kept in {args.dir}/{summary['previous_version']}"
    )
    return 0
