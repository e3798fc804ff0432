"""`kvid motion recompute DIR` and `kvid motion levels DIR`."""

from __future__ import annotations

import argparse

from curate import shards
from motion.levels import MotionLevelsError, read_levels, write_levels
from pipelines.config import ConfigError, keys_of
from pipelines.graph import add_stages, model_stages
from pipelines.preflight import preflight, require_kvid_folder
from pipelines.rewrite import add_folder_flags, folder_config, rewrite

EPILOG = """\
examples:
  kvid motion recompute data/ --backend raft --size 256          # GPU when there is one
  kvid motion recompute data/ --backend dis                      # CPU, no weights
  kvid motion recompute data/ --backend raft --weights raft_large_C_T_SKHT_V2-ff5fadd5.pth
  kvid motion levels data/                                       # -> data/motion_levels.json
  kvid motion levels data/ --low 20 --medium 50 --high 80

recompute reads the clips from the shards (no re-encode), writes the new scores into a new
dataset version (tars rewritten with updated .json, new index) and publishes it only when
every shard is done; the previous version moves to DIR/versions/. A killed run resumes
where it stopped when started again with the same options.

levels writes the motion-level mapping `kvid generate` reads: scores at the given
percentiles of the folder's clips, in the folder's units (backend, px/frame at size).
"""


RECOMPUTE_KEYS = keys_of("motion")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Motion scores on curated folders: recompute them, or derive generation levels."
    parser.epilog = EPILOG
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("recompute", help="recompute motion scores of a curated folder (no re-encode)")
    add_folder_flags(p, "motion_", RECOMPUTE_KEYS)

    p = sub.add_parser("levels", help="write DIR/motion_levels.json (low/medium/high percentiles)")
    p.add_argument("dir", metavar="DIR", help="output folder of `kvid curate`")
    p.add_argument("--low", type=float, default=10.0, help="percentile for 'low' (default: 10)")
    p.add_argument("--medium", type=float, default=50.0, help="percentile for 'medium' (default: 50)")
    p.add_argument("--high", type=float, default=90.0, help="percentile for 'high' (default: 90)")


def recompute(args: argparse.Namespace) -> int:
    cfg = folder_config(args.dir, args, (*RECOMPUTE_KEYS, "ray_address"), caption_model="none")  # captions are kept as they are
    if not cfg.motion_enabled:
        raise ConfigError("--backend none would remove the scores; pick raft, raft_small, dis or farneback")
    preflight(cfg)  # missing weights stop here

    settings = {k: getattr(cfg, k) for k in ("motion_backend", "motion_size", "motion_stride", "motion_weights")}
    summary = rewrite(
        args.dir,
        cfg,
        "motion",
        settings,
        lambda ds, cluster: add_stages(ds, model_stages(cfg.settings()), cluster),
        show_progress=False if args.quiet else None,
        config_updates=settings,
    )
    print(
        f"kvid motion recompute: {summary['clips']} clips scored ({summary['new_rejects']} motion_failed) in "
        f"{summary['parts_rewritten']} shards ({summary['parts_already_done']} done earlier), {summary['wall_s']:.1f} s; "
        f"previous version kept in {args.dir}/{summary['previous_version']}"
    )
    return 0


def levels(args: argparse.Namespace) -> int:
    require_kvid_folder(args.dir)
    rows = shards.read_index(args.dir, ["motion_score", "motion_backend", "motion_size"]).to_pylist()
    scored = [r for r in rows if r["motion_score"] is not None]
    if not scored:
        raise ConfigError(f"no motion scores in {args.dir}: run `kvid motion recompute {args.dir}` first")
    try:
        path = write_levels(args.dir, scored, percentiles={"low": args.low, "medium": args.medium, "high": args.high})
    except MotionLevelsError as e:
        raise ConfigError(str(e)) from e
    lv = read_levels(path)
    print(f"{path}: " + ", ".join(f"{k} {v:.3f}" for k, v in lv["levels"].items())
          + f" px/frame ({lv['backend']} at {lv['size']} px; {lv['num_clips']} clips, {len(rows) - len(scored)} unscored)")
    return 0


def run(args: argparse.Namespace) -> int:
    return recompute(args) if args.action == "recompute" else levels(args)
