"""Near-duplicate detection: signature cost, and matching time, memory and quality at scale.

    python bench/dedup.py                       # 10k and 1M synthetic signatures
    python bench/dedup.py --sizes 10000,100000  # smaller
    python bench/dedup.py --save                # also write bench/results/dedup-vm.json
    python bench/dedup.py --real-only --corpus /tmp/kvid-e2e/corpus   # false duplicates only

signature: frames/s of ``SignatureFeature.push`` on analysis-size frames (256x144), against
PySceneDetect's content detector on the same frames (the analysis decode already runs it),
and the analysis decode of one 1280x720 video with and without the signature (ratio).

matching: N random signatures whose frame hashes drift like a scene's, plus N/100 planted
near copies (3 bits of 64 flipped per frame, the first frame trimmed, luma jittered):
- batch (``kvid dedup``): keys, sort-based LSH candidates, verification, assignment;
- stream (the curate gate): ``DedupIndex.add`` one clip at a time (up to --stream-max).
Recall: planted copies matched to their original. False matches: any other match (random
signatures are never copies), per clip. Memory: peak resident memory of the matching (as
the RSS above the level before; the input signatures' own size beside). Growth: time per clip at the largest N
over time per clip at the smallest (1.0 = linear). No assertion: numbers are printed.

false duplicates on real footage (what had to hold before dedup went on by default): every
pair among the scenes of the real test clips (../shared/data/videos, analysed at defaults;
those with a picture: kept, or static photographs), the 50 distinct synthetic clips of
tests/dedup_fixtures.py, and with --corpus the scenes of bench/e2e_corpus.py's synthetic
files (whose re-uploads must match their originals: "copies found").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # first: this folder holds a bench/curate.py that would shadow the package

from curate import dedup as D  # noqa: E402
from curate.synthetic import synthetic_signatures  # noqa: E402


def textured_frames(n: int, w: int = 256, h: int = 144, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.integers(0, 255, (h, w + 2 * n, 3)).astype(np.uint8), (0, 0), 3)
    return np.ascontiguousarray(np.stack([big[:, 2 * t : 2 * t + w] for t in range(n)]))


def bench_signature(frames: int) -> dict:
    from curate.scenes import SceneDetector

    fr = textured_frames(frames)
    feature = D.SignatureFeature(24.0)
    t = time.perf_counter()
    for i, f in enumerate(fr):
        feature.push(i, f)
    sig_s = time.perf_counter() - t
    t = time.perf_counter()
    feature.signature(0, frames)
    stats_s = time.perf_counter() - t
    det = SceneDetector(24.0)
    t = time.perf_counter()
    for f in fr:
        det.push(f)
    det_s = time.perf_counter() - t
    return {
        "frames": frames,
        "frame_size": [256, 144],
        "signature_fps": round(frames / sig_s, 1),
        "scene_detector_fps": round(frames / det_s, 1),
        "signature_vs_scene_detector": round(sig_s / det_s, 3),
        "scene_signature_ms": round(1000 * stats_s, 3),
        "bytes_per_frame_while_decoding": 9,
    }


def bench_analysis(seconds: float, repeats: int) -> dict:
    """One analysis decode of a 1280x720 video, with and without the signature feature."""
    from curate.analyze import AnalysisParams, FrameClock, analyze_unit
    from curate.probe import probe
    from curate.synthetic import plain_video

    with tempfile.TemporaryDirectory() as d:
        path = plain_video(os.path.join(d, "v.mp4"), duration_s=seconds, fps=24, size=(1280, 720), source="testsrc2")
        info = probe(path)
        params = AnalysisParams()
        times = {"without": [], "with": []}
        for _ in range(repeats):
            for mode in ("without", "with"):
                feats = [D.SignatureFeature(info.fps)] if mode == "with" else []
                t = time.perf_counter()
                analyze_unit(info, 0, None, params, FrameClock(info), feats)
                times[mode].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    pairs = sorted(w / wo for w, wo in zip(times["with"], times["without"], strict=True))
    return {
        "video": f"{seconds:g} s 1280x720 24 fps testsrc2 (H.264)",
        "repeats": repeats,
        "analysis_s_without": round(best["without"], 3),
        "analysis_s_with": round(best["with"], 3),
        "with_vs_without_best": round(best["with"] / best["without"], 3),
        "with_vs_without_median_pair": round(pairs[len(pairs) // 2], 3),
    }


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every few milliseconds
    (tracemalloc would see numpy too, but slows every small allocation tenfold)."""

    def __enter__(self):
        import threading

        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mb(self) -> float:
        return round((self.peak - self.start) / 2**20, 1)


def quality(dup_of: dict[int, int], truth: dict[int, int], n_total: int) -> dict:
    hits = sum(1 for j, i in truth.items() if dup_of.get(j) == i)
    false = sum(1 for j, i in dup_of.items() if truth.get(j) != i)
    return {"recall": round(hits / max(1, len(truth)), 4), "false_matches": false,
            "false_match_rate": false / n_total}


def bench_batch(n: int, seed: int) -> dict:
    hashes, profiles, lengths, truth = synthetic_signatures(n, max(1, n // 100), seed=seed)
    total = len(hashes)
    input_mb = (hashes.nbytes + profiles.nbytes) / 2**20

    def signature(i: int) -> D.Signature:
        k = lengths[i]
        return D.Signature(D.KIND_PHASH, 8.0, hashes[i, :k], profiles[i, :k])

    with PeakRSS() as mem:
        t0 = time.perf_counter()
        keys = np.empty(total, dtype=np.uint64)
        for k in np.unique(lengths):  # rows of one length at a time, vectorised
            rows = np.flatnonzero(lengths == k)
            keys[rows] = D.majority_keys(hashes[rows, :k])
        t1 = time.perf_counter()
        pairs = D.duplicate_pairs(keys)
        t2 = time.perf_counter()
        dup_of, verified = D.assign_duplicates(keys, signature)
        t3 = time.perf_counter()
    found = {j: int(i) for j, i in enumerate(dup_of) if i >= 0}
    return {
        "clips": total,
        "planted_copies": len(truth),
        "keys_s": round(t1 - t0, 3),
        "candidates_s": round(t2 - t1, 3),
        "verify_assign_s": round(t3 - t2, 3),
        "total_s": round(t3 - t0, 3),
        "us_per_clip": round(1e6 * (t3 - t0) / total, 3),
        "candidate_pairs": int(len(pairs)),
        "verified": verified,
        "peak_matching_mb": mem.mb,
        "input_signatures_mb": round(input_mb, 1),
        **quality(found, truth, total),
    }


def bench_stream(n: int, seed: int) -> dict:
    hashes, profiles, lengths, truth = synthetic_signatures(n, max(1, n // 100), seed=seed)
    total = len(hashes)
    sigs = [D.Signature(D.KIND_PHASH, 8.0, hashes[i, : lengths[i]], profiles[i, : lengths[i]]) for i in range(total)]
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        index = D.DedupIndex()
        found = {int(j): int(i) for j, i in index.add_all((str(i), s) for i, s in enumerate(sigs)).items()}
        dt = time.perf_counter() - t0
    return {
        "clips": total,
        "total_s": round(dt, 3),
        "us_per_clip": round(1e6 * dt / total, 2),
        "index_mb": mem.mb,  # the signatures themselves were built before
        "bytes_per_kept_clip": int((mem.peak - mem.start) / max(1, len(index))),
        "verified": index.verified,
        **quality(found, truth, total),
    }


def growth(rows: list[dict]) -> dict | None:
    if len(rows) < 2:
        return None
    a, b = rows[0], rows[-1]
    return {"from": a["clips"], "to": b["clips"], "clips_x": round(b["clips"] / a["clips"], 1),
            "time_x": round(b["total_s"] / a["total_s"], 1),
            "per_clip_time_ratio": round(b["us_per_clip"] / a["us_per_clip"], 2)}


def _scene_signatures(path: str) -> list[tuple[str, D.Signature]]:
    from curate.filters import FilterParams
    from curate.video_stages import CurateParams, analyze_work_unit, plan_source

    params = CurateParams(filters=FilterParams(min_area=0, min_side=0, min_duration_s=1.0, min_fps=0))
    units, _ = plan_source(path, params)
    out = []
    for rec in (r for u in units for r in analyze_work_unit(u, params)):
        if rec.signature and (rec.ok or rec.reject_reason == "static"):
            out.append((f"{os.path.basename(path)}:{rec.start_frame}-{rec.end_frame}",
                        D.Signature.from_bytes(rec.signature)))
    return out


def real_false_duplicates(corpus: str | None) -> dict:
    """Matches among real scenes, distinct synthetic clips and the e2e corpus's scenes."""
    from pathlib import Path

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from dedup_fixtures import distinct_sources, lavfi_frames

    shared = Path(ROOT).parent / "shared" / "data" / "videos"
    sigs = [x for p in sorted(shared.glob("*.mp4")) for x in _scene_signatures(str(p))]
    real = len(sigs)
    for graph, start in distinct_sources():
        feature = D.SignatureFeature(24.0)
        for i, frame in enumerate(lavfi_frames(graph, 1.5, start)):
            feature.push(i, frame)
        sig = feature.signature(0, 10**9)
        assert sig is not None
        sigs.append((f"distinct:{graph[:40]}@{start:g}", sig))
    copies: set[frozenset[str]] = set()
    if corpus:
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        from e2e_corpus import build_corpus

        truth = build_corpus(Path(corpus), include_real=False)
        start = len(sigs)
        for f in truth["files"]:
            sigs += _scene_signatures(f["path"])
        names = {f["name"]: f for f in truth["files"]}
        for f in truth["files"]:  # re-uploads: their scenes should match the original's
            for seg in f["segments"]:
                if seg.get("copy_of"):
                    orig = names[seg["copy_of"]["name"]]
                    copies.add(frozenset((f["name"], orig["name"])))
        corpus_n = len(sigs) - start
    pairs, false, found = 0, [], []
    closest = (64.0, "", "")
    for i, (na, a) in enumerate(sigs):
        for nb, b in sigs[i + 1 :]:
            pairs += 1
            files = frozenset((na.split(":")[0][:-4], nb.split(":")[0][:-4]))
            if D.is_match(a, b):
                (found if files in copies else false).append((na, nb))
            elif not (D.mostly_flat(a) or D.mostly_flat(b)):
                bits, overlap, _ = D.signature_distance(a, b)
                if overlap >= D.DedupParams().min_overlap and bits < closest[0]:
                    closest = (round(bits, 2), na, nb)
    return {"signatures": len(sigs), "real_scenes": real, "distinct_synthetic": 50,
            "corpus_scenes": corpus_n if corpus else 0, "pairs": pairs, "false_duplicates": false,
            "false_rate": len(false) / max(pairs, 1), "copies_found": found, "copy_pairs_expected": len(copies),
            "closest_non_matching": closest, "max_distance": D.DedupParams().max_distance}


def save_result(name: str, result: dict) -> None:
    path = os.path.join(ROOT, "bench", "results", name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print("wrote", path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,1000000", help="numbers of random signatures (batch matching)")
    ap.add_argument("--stream-max", type=int, default=100000, help="largest size for the streaming index")
    ap.add_argument("--frames", type=int, default=600, help="frames for the signature cost")
    ap.add_argument("--video-s", type=float, default=20.0, help="length of the analysis-decode video")
    ap.add_argument("--repeats", type=int, default=5, help="analysis decodes per mode, interleaved")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", action="store_true", help="write bench/results/dedup-vm.json")
    ap.add_argument("--corpus", default=None, help="bench/e2e_corpus.py folder: its scenes join the false-duplicate set")
    ap.add_argument("--real-only", action="store_true", help="only the false duplicates on real footage")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    real = real_false_duplicates(args.corpus)
    print("false duplicates:", json.dumps(real))
    if args.real_only:
        if args.save:
            save_result("dedup-real-vm.json", real)
        return

    result: dict = {"bench": "dedup", "info": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                                               "machine": platform.machine()}, "args": vars(args)}
    result["signature"] = bench_signature(args.frames)
    print("signature:", json.dumps(result["signature"]))
    result["analysis"] = bench_analysis(args.video_s, args.repeats)
    print("analysis:", json.dumps(result["analysis"]))
    result["batch"] = []
    for n in sizes:
        r = bench_batch(n, args.seed)
        result["batch"].append(r)
        print("batch:", json.dumps(r))
    result["batch_growth"] = growth(result["batch"])
    print("batch growth:", json.dumps(result["batch_growth"]))
    result["stream"] = []
    for n in [s for s in sizes if s <= args.stream_max] + ([args.stream_max] if args.stream_max not in sizes else []):
        r = bench_stream(n, args.seed)
        result["stream"].append(r)
        print("stream:", json.dumps(r))
    result["stream_growth"] = growth(result["stream"])
    result["false_duplicates_real"] = real
    print("stream growth:", json.dumps(result["stream_growth"]))
    if args.save:
        save_result("dedup-vm.json", result)


if __name__ == "__main__":
    main()
