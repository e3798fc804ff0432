"""The `kvid` command line."""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import sys

from curate.atomic import OutputFull
from curate.output_lock import OutputBusy
from pipelines.config import ConfigError, add_config_flags, build_config, load_yaml, overrides_from_args
from pipelines.report import add_bucket_flags

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


class UsageError(ConfigError):
    """A command line argparse refused (unknown flag, bad choice, missing argument)."""


class KvidArgumentParser(argparse.ArgumentParser):
    """argparse with kvid's error style: one line naming the problem, not a usage dump.

    Flags must be spelled in full (allow_abbrev off): an abbreviation that works today
    would change meaning or break when a flag with the same prefix is added, and a
    mistyped flag gets a "did you mean" instead of silently matching another one.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command that was given: `kvid motion recompute` -> its parser."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name not in (subs[0].choices if subs else {}):
            return parser
        parser = subs[0].choices[name]


def unknown_arguments_message(parser: argparse.ArgumentParser, rest: list[str]) -> str:
    """One line for arguments ``parser`` does not take, with the closest flag for each typo."""
    flags = [opt for action in parser._actions for opt in action.option_strings]
    unknown = [a for a in rest if a.startswith("-") and a != "-"]
    if not unknown:
        return f"unrecognized arguments: {' '.join(rest)} (see `{parser.prog} --help`)"
    parts = []
    for arg in unknown:
        flag = arg.split("=", 1)[0]
        # An abbreviation means the flags it starts; else the closest spelling (a typo).
        meant = [f for f in flags if f.startswith(flag) and len(flag) > 2] or difflib.get_close_matches(
            flag, flags, n=1, cutoff=0.6)
        hint = f"; did you mean {' or '.join(meant[:3])}?" if meant and len(meant) <= 3 else ""
        parts.append(f"unknown flag {flag}{hint}")
    return "; ".join(parts) + f" (see `{parser.prog} --help`)"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


def cmd_curate(args: argparse.Namespace) -> int:
    from pipelines.curate import CurateInterrupted, format_summary, run_curate
    from pipelines.inputs import InputError

    overrides = overrides_from_args(args)
    if args.inputs:
        overrides["inputs"] = args.inputs
    file_values = load_yaml(args.config) if args.config else {}
    cfg = build_config(file_values, overrides, origin=args.config or "command line")
    try:
        summary = run_curate(cfg, show_progress=None if not args.quiet else False)
    except InputError as e:
        raise ConfigError(str(e)) from e
    except CurateInterrupted as e:
        print(format_summary(e.summary))
        raise
    print(format_summary(summary))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from pipelines.report import buckets_from_args, inspect_output

    return inspect_output(args.dir, html=not args.no_html, open_browser=args.open, thumbs=args.thumbs,
                          buckets=buckets_from_args(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    return run_demo(args.out, open_report=args.open, extra=args.extra)


def _lazy_command(module: str):
    """Subcommands owned by other packages: imported only when used."""
    mod = importlib.import_module(module)
    return mod.add_arguments, mod.run


def build_parser() -> argparse.ArgumentParser:
    parser = KvidArgumentParser(
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
    add_bucket_flags(p)
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
        ("export", "pipelines.export_cmd", "write a curated folder as a Lance dataset (index columns + clip bytes)"),
        ("generate", "generate.cli", "Kandinsky Video 1.1: text/image to video from a YAML job file"),
    ):
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.set_defaults(lazy=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, run = parse_command(argv)
    except UsageError as e:
        print(f"kvid: error: {e}", file=sys.stderr)
        return 2
    if run is None:
        build_parser().print_help()
        return 2
    _setup_logging(args.verbose)
    return _guard(run)


def parse_command(argv: list[str]):
    """(args, the command to run) for ``argv``; run is None when no command was given.
    Raises UsageError for anything argparse refuses, unknown flags included."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # -v/--verbose belongs to `kvid`, but people also put it after the command.
    if "-v" in rest or "--verbose" in rest:
        args.verbose = True
        rest = [a for a in rest if a not in ("-v", "--verbose")]
    lazy = getattr(args, "lazy", None)
    if lazy:
        # Build the owning package's parser now (it may import torch etc.) and reparse.
        add_arguments, run = _lazy_command(lazy)
        sub = KvidArgumentParser(prog=f"kvid {args.command}", formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(sub)
        sub_args, sub_rest = sub.parse_known_args(rest)
        if sub_rest:
            raise UsageError(unknown_arguments_message(chosen_parser(sub, sub_args), sub_rest))
        return args, lambda: run(sub_args)
    if rest:
        raise UsageError(unknown_arguments_message(chosen_parser(parser, args), rest))
    if not getattr(args, "func", None):
        return args, None
    return args, lambda: args.func(args)


def _guard(fn) -> int:
    """Expected failures print one clear message, not a traceback."""
    try:
        return int(fn() or 0)
    except ConfigError as e:
        print(f"kvid: error: {e}", file=sys.stderr)
        return 2
    except (OutputBusy, OutputFull) as e:
        print(f"kvid: error: {e.args[-1]}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("kvid: interrupted; finished work is committed: re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or an unforeseen failure: still one line, the details in a file
        if os.environ.get("KVID_TRACEBACK"):
            raise
        print(f"kvid: error: {_one_line(e)}{_traceback_note(e)}", file=sys.stderr)
        return 1


def _innermost(e: BaseException) -> BaseException:
    """The worker's exception behind a Ray task error, else ``e``."""
    for _ in range(10):
        inner = getattr(e, "cause", None) or e.__cause__
        if inner is None or inner is e:
            break
        e = inner
    return e


def _one_line(e: BaseException) -> str:
    inner = _innermost(e)
    text = (str(inner).strip().splitlines() or [""])[0][:300]
    # kvid's own RuntimeErrors are messages for the user; anything else says what it is.
    return text if type(inner) is RuntimeError else f"{type(inner).__name__}: {text}"


def _traceback_note(e: BaseException) -> str:
    """Where the full traceback went (not for the errors kvid raises on purpose)."""
    if type(_innermost(e)) is RuntimeError:
        return ""
    import tempfile
    import traceback

    path = os.path.join(tempfile.gettempdir(), f"kvid-error-{os.getpid()}.log")
    try:
        with open(path, "w", encoding="utf-8") as f:
            traceback.print_exception(e, file=f)
    except OSError:
        return " (run with KVID_TRACEBACK=1 for the traceback)"
    return f" (unexpected: the traceback is in {path}; finished work is committed, re-running resumes)"


if __name__ == "__main__":
    sys.exit(main())
