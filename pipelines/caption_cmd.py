"""`kvid caption DIR --model ID_OR_PATH`: (re)caption the clips of a curated folder."""

from __future__ import annotations

import argparse

from pipelines.config import ConfigError, keys_of
from pipelines.graph import add_stages, model_stages
from pipelines.preflight import preflight
from pipelines.rewrite import add_folder_flags, folder_config, rewrite

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


CAPTION_KEYS = keys_of("caption_frames", "caption")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Caption (or recaption) the clips of a curated folder with a video VLM."
    parser.epilog = EPILOG
    add_folder_flags(parser, "caption_", CAPTION_KEYS, required=("caption_model",))

def run(args: argparse.Namespace) -> int:
    # Motion is not redone here: the model check must not load RAFT.
    cfg = folder_config(args.dir, args, (*CAPTION_KEYS, "ray_address"), motion_backend="none")
    if not cfg.caption_enabled:
        raise ConfigError("--model none would remove the captions; give a model id or folder")
    preflight(cfg)
    settings = {k: getattr(cfg, k) for k in ("caption_model", "caption_prompt", "caption_frames", "caption_max_new_tokens")}
    stages = model_stages(cfg.settings())
    summary = rewrite(args.dir, cfg, "caption", settings, lambda ds, cluster: add_stages(ds, stages, cluster),
                      show_progress=False if args.quiet else None, config_updates=settings)
    print(
        f"kvid caption: {summary['clips']} clips captioned ({summary['new_rejects']} caption_failed) in "
        f"{summary['parts_rewritten']} shards ({summary['parts_already_done']} done earlier), {summary['wall_s']:.1f} s; "
        f"previous version kept in {args.dir}/{summary['previous_version']}"
    )
    return 0
