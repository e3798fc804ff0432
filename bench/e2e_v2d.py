"""video2dataset 1.3.0 as the end-to-end bench runs it: cut detection + exact clipping
(+ 24 fps at equal settings), one sample per shard so that every process has work.

Run with video2dataset's own venv (bench/e2e.py --setup-v2d makes it), never kvid's:

    v2d/bin/python bench/e2e_v2d.py URLS.csv OUT --processes 2 [--fps 24 --crf 18 --preset fast --min-length 2]

Four patches, all here and not in site-packages, at module level so that the spawned worker
processes (video2dataset's multiprocessing distributor uses "spawn") apply them too:
  1. FrameSubsampler gets the `.encode_formats` the download worker reads from the first
     video subsampler (it only has `.encode_format`): video2dataset 1.3.0 fails without it.
  2. FrameSubsampler is handed a copy of the streams dict: the worker iterates over that dict
     while FrameSubsampler pops and re-adds "video" (RuntimeError on Python 3.11).
  3. With --crf/--preset/--codec, every mp4 that ffmpeg-python writes gets those encoder
     arguments (video2dataset passes none, so ffmpeg's libx264 defaults apply: CRF 23, medium).
  4. torchaudio is a stub when the real one cannot load: it pins torch 2.1.2, and only
     video2dataset's dataloader (never the download stage) uses it.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import sys
import types

ENCODER_ENV = "KVID_BENCH_V2D_ENCODER"  # JSON {"vcodec", "crf", "preset"}; read by the spawned workers too


def _stub_torchaudio() -> None:
    if importlib.util.find_spec("torchaudio") is not None:
        return
    for name in ("torchaudio", "torchaudio.functional"):
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
        sys.modules[name] = mod
    sys.modules["torchaudio"].functional = sys.modules["torchaudio.functional"]


def _patch_encoder() -> None:
    settings = json.loads(os.environ.get(ENCODER_ENV) or "{}")
    if not settings:
        return
    import ffmpeg
    from ffmpeg.nodes import FilterableStream

    original = ffmpeg.output  # `stream.output(...)` is this function set on FilterableStream

    def output(*streams_and_filename, **kwargs):
        if str(streams_and_filename[-1]).endswith(".mp4"):
            kwargs = {**settings, "pix_fmt": "yuv420p", **kwargs}
        return original(*streams_and_filename, **kwargs)

    ffmpeg.output = output
    FilterableStream.output = output


_stub_torchaudio()
_patch_encoder()

from video2dataset.subsamplers import FrameSubsampler  # noqa: E402  (after the patches above)

if not hasattr(FrameSubsampler, "encode_formats"):
    FrameSubsampler.encode_formats = property(lambda self: {"video": self.encode_format})

_frame_subsample = FrameSubsampler.__call__


def _frame_subsample_on_a_copy(self, streams, metadata=None):
    # The download worker iterates over the streams dict while FrameSubsampler pops and re-adds
    # its "video" key: Python 3.11 raises "dictionary keys changed during iteration". The
    # subsampler returns the dict it was given, so handing it a copy changes nothing else.
    return _frame_subsample(self, dict(streams), metadata)


FrameSubsampler.__call__ = _frame_subsample_on_a_copy


def config(processes: int, fps: float | None, min_length: float) -> dict:
    subsampling = {
        "CutDetectionSubsampler": {
            "cuts_are_clips": True,
            "args": {"cut_detection_mode": "all", "framerates": None, "threshold": 27, "min_scene_len": 15},
        },
        "ClippingSubsampler": {"args": {"precision": "exact", "min_length": min_length}},
    }
    if fps:
        subsampling["FrameSubsampler"] = {"args": {"frame_rate": fps}}
    return {
        "subsampling": subsampling,
        "reading": {
            "yt_args": {"download_size": 360, "download_audio_rate": 44100, "yt_metadata_args": None},
            "timeout": 60,
            "sampler": None,
        },
        "storage": {"number_sample_per_shard": 1, "oom_shard_count": 5, "captions_are_subtitles": False},
        "distribution": {
            "processes_count": processes, "thread_count": 1, "subjob_size": 1000, "distributor": "multiprocessing",
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url_list")
    ap.add_argument("output_folder")
    ap.add_argument("--processes", type=int, default=os.cpu_count())
    ap.add_argument("--fps", type=float, default=None, help="FrameSubsampler frame rate (default: keep the source's)")
    ap.add_argument("--min-length", type=float, default=0.0, help="ClippingSubsampler min_length, seconds")
    ap.add_argument("--tmp-dir", default="/tmp")
    args = ap.parse_args()

    from video2dataset import video2dataset

    video2dataset(
        url_list=args.url_list,
        output_folder=args.output_folder,
        output_format="webdataset",
        input_format="csv",
        url_col="url",
        encode_formats={"video": "mp4"},
        # "overwrite" deletes the _tmp folder it has just made (1.3.0); the bench starts empty.
        incremental_mode="incremental",
        tmp_dir=args.tmp_dir,
        config=config(args.processes, args.fps, args.min_length),
    )


if __name__ == "__main__":
    main()
