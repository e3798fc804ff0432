"""The `kvid` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from pipelines.config import ConfigError, add_config_flags, build_config, load_yaml, overrides_from_args

CURATE_EPILOG = """\
examples:
  kvid curate videos/ --out data/ --motion-backend dis --caption-model none
  kvid curate 'raw/**/*.mp4' --out data/ --config curate.yaml
  kvid curate s3://bucket/raw/ --out /shared/data --ray-address auto   # needs s3fs

Every configuration key can be a flag (--min-duration-s 3) or a key in a YAML file given
with --config (min_duration_s: 3); flags win. Re-running the same command resumes: finished
sources are skipped and the clip ids stay the same. Inputs may be URIs (s3://, gs://,
https://, file://): each node stages a copy in --input-cache-dir; the output must be a path.

Offline or CPU-only machines: RAFT weights and the captioning model are downloaded on first
use by torchvision / Hugging Face. Without internet pass --motion-weights PATH.pth or
--motion-backend dis, and --caption-model LOCAL_PATH or --caption-model none.

output:
  OUT/shards/shard-NNNNNN.tar     WebDataset tars: <clip_id>.mp4 / .json / .txt
  OUT/index/shard-NNNNNN.parquet  one row per clip (see curate/schema.py)
  OUT/rejects/*.parquet           one row per rejected source or scene, with stage and reason
  OUT/manifest.json               effective config, versions, counts, runs
"""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


def cmd_curate(args: argparse.Namespace) -> int:
    from pipelines.curate import InputError, format_summary, run_curate

    overrides = overrides_from_args(args)
    if args.inputs:
        overrides["inputs"] = args.inputs
    file_values = load_yaml(args.config) if args.config else {}
    cfg = build_config(file_values, overrides, origin=args.config or "command line")
    try:
        summary = run_curate(cfg, show_progress=None if not args.quiet else False)
    except InputError as e:
        raise ConfigError(str(e)) from e
    print(format_summary(summary))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from pipelines.report import inspect_output

    return inspect_output(args.dir, html=not args.no_html, open_browser=args.open, thumbs=args.thumbs)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    return run_demo(args.out, open_report=args.open, extra=args.extra)


def _lazy_command(module: str):
    """Subcommands owned by other packages: imported only when used."""
    mod = importlib.import_module(module)
    return mod.add_arguments, mod.run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvid",
        description="Build text-to-video training data from raw video (curate, motion, caption, "
        "shards) and generate video with Kandinsky Video 1.1.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "curate",
        help="raw videos -> scenes -> filtered, cropped 24 fps clips -> shards",
        description="Cut raw videos into scenes, filter them, crop black borders, resample to 24 fps, "
        "score motion, caption, and write WebDataset shards with a Parquet index, on Ray.",
        epilog=CURATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="video files, folders (recursive) or quoted globs")
    p.add_argument("--config", metavar="FILE", help="YAML file of configuration keys")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_flags(p)
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser(
        "inspect",
        help="summarise a curated folder; write an HTML report with thumbnails",
        description="Counts, duration/fps/size/motion histograms, rejects by reason, and an HTML "
        "report (OUT/report.html) with a thumbnail strip per clip.",
    )
    p.add_argument("dir", metavar="DIR", help="output folder of `kvid curate`")
    p.add_argument("--no-html", action="store_true", help="print the summary only")
    p.add_argument("--thumbs", type=int, default=5, help="thumbnails per clip strip (default: 5)")
    p.add_argument("--open", action="store_true", help="open the report in a browser")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "demo",
        help="render sample videos with ffmpeg, curate them, and write the report",
        description="Makes a few short synthetic videos (hard cuts, a letterboxed scene, a 15 fps "
        "file, a too-short file, a corrupt file), curates them on a local Ray with the offline "
        "choices (--motion-backend dis --caption-model none), and writes DIR/report.html.",
    )
    p.add_argument("--out", default="kvid-demo", help="folder for the samples and the output (default: kvid-demo)")
    p.add_argument("--open", action="store_true", help="open the report in a browser")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="further `kvid curate` flags, after --")
    p.set_defaults(func=cmd_demo)

    for name, module, help_text in (
        ("motion", "pipelines.motion_cmd", "recompute motion scores on shards; compute motion levels"),
        ("caption", "pipelines.caption_cmd", "(re)caption existing shards with a video VLM"),
        ("dedup", "pipelines.dedup_cmd", "reject near-duplicate clips of a curated folder (new version)"),
        ("generate", "generate.cli", "Kandinsky Video 1.1: text/image to video from a YAML job file"),
    ):
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.set_defaults(lazy=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    lazy = getattr(args, "lazy", None)
    if lazy:
        # Build the owning package's parser now (it may import torch etc.) and reparse.
        add_arguments, run = _lazy_command(lazy)
        sub = argparse.ArgumentParser(prog=f"kvid {args.command}", formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(sub)
        sub_args = sub.parse_args(rest)
        _setup_logging(args.verbose)
        return _guard(lambda: run(sub_args))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose)
    return _guard(lambda: args.func(args))


def _guard(fn) -> int:
    """Expected failures print one clear message, not a traceback."""
    try:
        return int(fn() or 0)
    except ConfigError as e:
        print(f"kvid: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("kvid: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except RuntimeError as e:
        if os.environ.get("KVID_TRACEBACK"):
            raise
        print(f"kvid: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
