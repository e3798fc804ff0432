"""Near-duplicate clips: a perceptual signature per scene, and matching at linear cost.

Signature (kind ``phash64``), taken in the analysis decode (no extra decode):
- every analysis frame is kept as a 64-pixel-wide gray copy while the unit is decoded
  (2.3 KB a 16:9 frame);
- a scene's signature samples those at ``rate`` per second of the scene (nearest frame),
  so copies at another frame rate sample the same moments, cuts each sample to the scene's
  black-border crop (a letterboxed or pillarboxed copy signs like its original) and hashes
  it: a 64-bit DCT hash (pHash: an area resize to 32x32, the 8x8 lowest DCT coefficients
  against their median) and its mean luma. Hashes are the visual content, the mean-luma
  curve the temporal profile; at most ``max_samples``.
Rescaling, re-encoding, small crops and small colour shifts move only a few of the 64
bits; trimmed ends shift the samples, which the comparison undoes by trying offsets.

Matching: each clip's *key* is the bitwise majority of its frame hashes (stable under
trims and noise). LSH on the key (``LSH_TABLES`` tables, each keyed by ``LSH_BITS`` fixed
pseudo-random bits of it) proposes candidates; keys closer than ``KEY_MAX_BITS`` are
verified by the full signature distance over aligned samples (best offset within
``max_offset_s``), mean luma curves alike. Two implementations give the same answer:
``DedupIndex`` one clip at a time (the curate gate: dict look-ups per clip) and
``assign_duplicates`` for a whole folder (``kvid dedup``: sort-based, numpy, one table at
a time). Both cost a few look-ups and verifications per clip, so time grows about
linearly; random bucket-mates grow as N^2 / 2^LSH_BITS, a few thousand at a million clips
(raise LSH_BITS for folders of tens of millions).

Groups: a clip that matches a kept clip becomes a duplicate of it (never of another
duplicate, so there are no chains). Fed best-first (``keep_order``: longest, then largest
area, then smallest clip id), the first clip of each group is the kept one.

Another signature (e.g. a CLIP or video embedding) is a new ``kind``: a FrameFeature that
writes ``signature`` blobs with its kind in the header, and a key/distance pair registered
in ``KINDS``. Clips of different kinds are never compared.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from curate import schema, shards
from curate.settings import setting
from curate.stage import SCENES, Cluster, Placement, Resources, Stage

KIND_PHASH = "phash64"
_MAGIC = b"KVS1"
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

# LSH on the 64-bit key: a near copy's key differs in a few bits (p ~ 5% per bit), a random
# one in half. Per table a near copy collides with probability (1 - p)^LSH_BITS (~0.3) and a
# random clip with 2^-LSH_BITS (6e-8): with 16 tables a near copy is found ~99% of the time
# and a million clips give ~1 random bucket-mate each (most fail the key pre-filter).
LSH_TABLES = 16
LSH_BITS = 24
# Candidates whose keys differ in more bits than this skip the full verification (cheap
# pre-filter; near copies measure 0-4). A random pair that shares a bucket already agrees
# on LSH_BITS bits; over the other 40 it passes 10 with probability 0.1%.
KEY_MAX_BITS = 10
MAX_BUCKET = 64  # clips remembered per bucket


def _lsh_positions() -> np.ndarray:
    rng = np.random.default_rng(20261201)  # fixed: keys must agree between runs
    return np.stack([rng.choice(64, LSH_BITS, replace=False) for _ in range(LSH_TABLES)]).astype(np.uint64)


LSH_POSITIONS = _lsh_positions()  # (tables, bits)


@dataclass(frozen=True)
class SignatureParams:
    rate: float = 8.0  # samples per second of scene
    max_samples: int = 1024  # a signature covers at most the first max_samples / rate seconds


@dataclass(frozen=True)
class DedupParams:
    """Near-duplicates: whether a run rejects them, and when two signatures are copies. A resume
    may change them (nothing already written changes): clips are matched against the folder's,
    and `kvid dedup DIR` matches a whole folder again."""

    enabled: bool = setting(
        True, "reject near-duplicate scenes (of this run's clips and those already in --out) before encoding", key="dedup")
    max_distance: float = setting(
        10.0, "mean differing signature bits (of 64) per aligned frame of copies", ge=0, le=64)
    max_offset_s: float = setting(0.5, "copies may be trimmed by up to this many seconds at either end", ge=0)
    min_overlap: float = setting(0.8, "fraction of the longer clip that must align with the other", gt=0, le=1)
    # Not a setting: mean |luma difference| (0-255) after removing the mean.
    max_profile_diff: float = 12.0


# --- per-frame hashes ----------------------------------------------------------------------

_DCT_SIZE = 32
# A frame this flat (luma std at 32x32) has no structure to hash: its hash is FLAT_HASH, and
# clips made mostly of such frames (black, fades, a plain wall) are never matched: they
# would all look alike. Flat scenes are a filter's business.
FLAT_STD = 2.0
FLAT_HASH = 0
MAX_FLAT_FRACTION = 0.5


def frame_hash(frame_bgr: np.ndarray) -> tuple[int, int]:
    """(64-bit pHash, mean luma) of one BGR frame; FLAT_HASH for a flat frame."""
    gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    # Gaussian halvings first: an area resize straight from 256 px wide costs 3x more.
    while gray.shape[0] >= 4 * _DCT_SIZE and gray.shape[1] >= 4 * _DCT_SIZE:
        gray = cv2.pyrDown(gray)
    return gray_hash(gray)


def gray_hash(gray: np.ndarray) -> tuple[int, int]:
    """(64-bit pHash, mean luma) of a small gray picture (resized to 32x32 here)."""
    small = cv2.resize(gray, (_DCT_SIZE, _DCT_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    mean, std = cv2.meanStdDev(small)
    if float(std[0, 0]) < FLAT_STD:
        return FLAT_HASH, round(float(mean[0, 0]))
    low = cv2.dct(small)[:8, :8].reshape(-1)
    median = np.partition(low[1:], 31)[31]  # the DC term says only how bright the frame is
    return int.from_bytes(np.packbits(low > median).tobytes(), "big"), round(float(mean[0, 0]))


@dataclass
class Signature:
    kind: str
    rate: float
    hashes: np.ndarray  # uint64, one per sample
    profile: np.ndarray  # uint8 mean luma, one per sample

    def __len__(self) -> int:
        return len(self.hashes)

    def to_bytes(self) -> bytes:
        kind = self.kind.encode("ascii")
        head = _MAGIC + struct.pack("<B", len(kind)) + kind + struct.pack("<fI", self.rate, len(self.hashes))
        return head + self.hashes.astype("<u8").tobytes() + self.profile.astype(np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Signature:
        if blob[:4] != _MAGIC:
            raise ValueError("not a kvid signature")
        k = blob[4]
        kind = blob[5 : 5 + k].decode("ascii")
        rate, n = struct.unpack_from("<fI", blob, 5 + k)
        at = 5 + k + 8
        hashes = np.frombuffer(blob, "<u8", n, at).astype(np.uint64)
        profile = np.frombuffer(blob, np.uint8, n, at + 8 * n)
        return cls(kind, float(rate), hashes, profile)

    def to_text(self) -> str:
        """Base64 of the blob: how a signature travels in JSON rows and scene statistics."""
        return base64.b64encode(self.to_bytes()).decode("ascii")


def signature_bytes(value: bytes | str | None) -> bytes | None:
    """A signature column value from the index (bytes) or from a JSON row (base64 text)."""
    if value is None or isinstance(value, bytes):
        return value
    return base64.b64decode(value)


# Frames are kept this wide (gray, 2.3 KB a 16:9 frame) until the scene's crop is known.
HASH_WIDTH = 64
MIN_CROP_PX = 8  # a crop narrower than this (at HASH_WIDTH) hashes the whole frame


class SignatureFeature:
    """FrameFeature (curate/scene_features.py): a ``signature`` per scene, of the picture
    inside the scene's black-border crop, so a letterboxed or pillarboxed copy signs like its
    original. The crop is known only after the decode (border detection decides per scene),
    so each frame is kept as a ``HASH_WIDTH``-wide gray copy until then, and the sampled
    frames are cropped and hashed in ``scene_stats``. ``cropped``: analyze.py passes the crop."""

    name = "signature"
    cropped = True

    def __init__(self, fps: float, params: SignatureParams = SignatureParams(),
                 source_size: tuple[int, int] | None = None):
        self.fps = fps
        self.params = params
        self.source_size = source_size  # (width, height) the crop is given in; None: the frames'
        self.first: int | None = None
        self.small: list[np.ndarray] = []

    def push(self, frame_index: int, frame_bgr: np.ndarray) -> None:
        if self.first is None:
            self.first = frame_index
        # Frames arrive in order; a gap (should not happen) repeats the last frame.
        while self.first + len(self.small) < frame_index and self.small:
            self.small.append(self.small[-1])
        gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        if w > HASH_WIDTH:
            gray = cv2.resize(gray, (HASH_WIDTH, max(1, round(h * HASH_WIDTH / w))), interpolation=cv2.INTER_AREA)
        self.small.append(gray)

    def _crop(self, img: np.ndarray, crop: tuple[int, int, int, int] | None) -> np.ndarray:
        if crop is None:
            return img
        h, w = img.shape
        sw, sh = self.source_size or (w, h)
        x, y, cw, ch = crop
        # inward: a part of a bar left in would move the hash
        x0, y0 = int(np.ceil(x * w / sw)), int(np.ceil(y * h / sh))
        x1, y1 = int((x + cw) * w // sw), int((y + ch) * h // sh)
        if x1 - x0 < MIN_CROP_PX or y1 - y0 < MIN_CROP_PX:
            return img
        return img[y0:y1, x0:x1]

    def signature(self, start_frame: int, end_frame: int,
                  crop: tuple[int, int, int, int] | None = None) -> Signature | None:
        """The signature of frames [start_frame, end_frame) inside ``crop`` (x, y, w, h in
        ``source_size`` pixels; None: the whole frame)."""
        if self.first is None:
            return None
        lo, hi = max(start_frame, self.first), min(end_frame, self.first + len(self.small))
        if hi <= lo:
            return None
        n = min(self.params.max_samples, max(1, int((hi - lo) / self.fps * self.params.rate)))
        frames = np.minimum(lo + np.round(np.arange(n) * self.fps / self.params.rate).astype(np.int64), hi - 1)
        pairs = [gray_hash(self._crop(self.small[i], crop)) for i in frames - self.first]
        hashes = np.array([h for h, _ in pairs], dtype=np.uint64)
        profile = np.array([min(255, luma) for _, luma in pairs], dtype=np.uint8)
        return Signature(KIND_PHASH, self.params.rate, hashes, profile)

    def scene_stats(self, start_frame: int, end_frame: int,
                    crop: tuple[int, int, int, int] | None = None) -> dict[str, Any]:
        sig = self.signature(start_frame, end_frame, crop)
        return {"signature": sig.to_text() if sig is not None else None}


# --- distances -----------------------------------------------------------------------------


def popcount64(x: np.ndarray) -> np.ndarray:
    """Bits set per uint64 element."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _POPCOUNT8[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.int64)


def clip_key(sig: Signature) -> int:
    """Bitwise majority of the sample hashes: one 64-bit word for the whole clip."""
    return int(majority_keys(sig.hashes[None, :])[0])


def majority_keys(hashes: np.ndarray, chunk: int = 1 << 14) -> np.ndarray:
    """(N, S) uint64 -> (N,) uint64 bitwise majority over each row (batches, benchmarks);
    ``chunk`` rows at a time, so memory stays bounded (64 bytes per hash while unpacked)."""
    out = np.empty(len(hashes), dtype=np.uint64)
    for at in range(0, len(hashes), chunk):
        part = np.ascontiguousarray(hashes[at : at + chunk], dtype=">u8")
        bits = np.unpackbits(part.view(np.uint8).reshape(*part.shape, 8), axis=-1)  # (n, S, 64)
        maj = bits.sum(axis=1, dtype=np.int32) * 2 > hashes.shape[1]
        out[at : at + chunk] = np.packbits(maj.astype(np.uint8), axis=-1).view(">u8").reshape(-1)
    return out


def signature_distance(a: Signature, b: Signature, params: DedupParams = DedupParams()) -> tuple[float, float, float]:
    """(mean differing bits, overlap fraction, mean profile difference) at the best offset
    of ``b`` against ``a`` (within ``max_offset_s``); (64, 0, 255) when they cannot be aligned."""
    if a.kind != b.kind or a.rate != b.rate or not len(a) or not len(b):
        return 64.0, 0.0, 255.0
    la, lb = len(a), len(b)
    max_off = round(params.max_offset_s * a.rate)
    offsets = np.arange(-max_off, max_off + 1)  # b[j] aligned with a[j + off]
    n = np.minimum(la - np.maximum(offsets, 0), lb - np.maximum(-offsets, 0))
    ok = (n > 0) & (n >= params.min_overlap * max(la, lb))
    if not ok.any():
        return 64.0, 0.0, 255.0
    offsets, n = offsets[ok], n[ok]
    if la * lb <= 1 << 16:
        # All offsets at once: differing bits of every (i, j) pair, summed along diagonals.
        bits = popcount64(a.hashes[:, None] ^ b.hashes[None, :])
        diag = (np.arange(la)[:, None] - np.arange(lb)[None, :]) + (lb - 1)
        sums = np.bincount(diag.ravel(), weights=bits.ravel(), minlength=la + lb - 1)[offsets + lb - 1]
    else:  # long signatures: one offset at a time keeps memory linear
        sums = np.array([popcount64(a.hashes[max(0, o) : max(0, o) + k] ^ b.hashes[max(0, -o) : max(0, -o) + k]).sum()
                         for o, k in zip(offsets, n, strict=True)], dtype=np.float64)
    mean_bits = sums / n
    best = int(np.argmin(mean_bits))
    off, k = int(offsets[best]), int(n[best])
    pa = a.profile[max(0, off) : max(0, off) + k].astype(np.float32)
    pb = b.profile[max(0, -off) : max(0, -off) + k].astype(np.float32)
    prof = float(np.abs((pa - pa.mean()) - (pb - pb.mean())).mean())
    return float(mean_bits[best]), k / max(la, lb), prof


def mostly_flat(sig: Signature) -> bool:
    return float(np.mean(sig.hashes == FLAT_HASH)) > MAX_FLAT_FRACTION


def is_match(a: Signature, b: Signature, params: DedupParams = DedupParams()) -> bool:
    if mostly_flat(a) or mostly_flat(b):
        return False
    bits, overlap, prof = signature_distance(a, b, params)
    return bits <= params.max_distance and overlap >= params.min_overlap and prof <= params.max_profile_diff


# Registered signature kinds: clip key (for LSH) and verification. An embedding kind adds
# its own pair here (e.g. a sign-random-projection key and a cosine threshold).
KINDS: dict[str, tuple[Callable[[Signature], int], Callable[[Signature, Signature, DedupParams], bool]]] = {
    KIND_PHASH: (clip_key, is_match),
}


# --- matching ------------------------------------------------------------------------------


def lsh_buckets(key: int) -> list[int]:
    """One bucket id per LSH table (table number in the top bits)."""
    bits = (np.uint64(key) >> LSH_POSITIONS) & np.uint64(1)
    weights = np.uint64(1) << np.arange(LSH_BITS, dtype=np.uint64)
    vals = (bits * weights).sum(axis=1)
    return [(t << LSH_BITS) | int(v) for t, v in enumerate(vals)]


def lsh_buckets_batch(keys: np.ndarray) -> np.ndarray:
    """(N,) uint64 keys -> (N, tables) bucket ids, vectorised."""
    out = np.zeros((len(keys), LSH_TABLES), dtype=np.int64)
    k = keys.astype(np.uint64)
    for t in range(LSH_TABLES):
        v = np.zeros(len(keys), dtype=np.uint64)
        for j, pos in enumerate(LSH_POSITIONS[t]):
            v |= ((k >> pos) & np.uint64(1)) << np.uint64(j)
        out[:, t] = (t << LSH_BITS) | v.astype(np.int64)
    return out


class DedupIndex:
    """The kept clips seen so far, for matching clips one at a time.

    ``add`` returns None (the clip is kept and indexed) or the id of the kept clip it
    duplicates. Memory: per kept clip its signature (9 bytes per sample) plus LSH_TABLES
    bucket entries; signatures can be dropped (``keep_signatures=False``) when a loader
    can fetch them again (``load``), as for very large folders.
    """

    def __init__(self, params: DedupParams = DedupParams(), load: Callable[[int], Signature] | None = None):
        self.params = params
        self.ids: list[str] = []
        self.keys: list[int] = []
        self.sigs: list[Signature | None] = []
        self.buckets: dict[int, int | list[int]] = {}
        self.position: dict[str, int] = {}
        self.load = load
        self.verified = 0  # full signature comparisons made

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self.position

    def _signature(self, i: int) -> Signature:
        sig = self.sigs[i]
        if sig is not None:
            return sig
        if self.load is None:
            raise ValueError(f"clip {self.ids[i]}: its signature was dropped and no loader was given")
        return self.load(i)

    def candidates(self, key: int, buckets: Iterable[int] | None = None) -> list[int]:
        found: dict[int, None] = {}
        for b in lsh_buckets(key) if buckets is None else buckets:
            hit = self.buckets.get(b)
            if hit is None:
                continue
            for i in hit if isinstance(hit, list) else (hit,):
                found[i] = None
        return list(found)

    def match(self, sig: Signature, key: int | None = None, buckets: Iterable[int] | None = None) -> int | None:
        """Position of the first indexed (kept) clip that ``sig`` duplicates, or None."""
        key_fn, match_fn = KINDS[sig.kind]
        key = key_fn(sig) if key is None else key
        for i in sorted(self.candidates(key, buckets)):  # earliest kept first: deterministic
            if bin(self.keys[i] ^ key).count("1") > KEY_MAX_BITS:
                continue
            self.verified += 1
            if match_fn(self._signature(i), sig, self.params):
                return i
        return None

    def insert(self, clip_id: str, sig: Signature, key: int | None = None, keep_signature: bool = True,
               buckets: Iterable[int] | None = None) -> None:
        key = KINDS[sig.kind][0](sig) if key is None else key
        i = len(self.ids)
        self.ids.append(clip_id)
        self.keys.append(key)
        self.sigs.append(sig if keep_signature else None)
        self.position[clip_id] = i
        for b in lsh_buckets(key) if buckets is None else buckets:
            hit = self.buckets.get(b)
            if hit is None:
                self.buckets[b] = i
            elif isinstance(hit, list):
                if len(hit) < MAX_BUCKET:  # a degenerate key fills one bucket; the others still work
                    hit.append(i)
            else:
                self.buckets[b] = [hit, i]

    def add(self, clip_id: str, sig: Signature) -> str | None:
        """Match, and index the clip when it is kept. A clip id already indexed is itself
        (a retried task), not a duplicate."""
        if clip_id in self.position:
            return None
        key = KINDS[sig.kind][0](sig)
        buckets = lsh_buckets(key)
        hit = self.match(sig, key, buckets)
        if hit is not None:
            return self.ids[hit]
        self.insert(clip_id, sig, key, buckets=buckets)
        return None

    def add_all(self, clips: Iterable[tuple[str, Signature]]) -> dict[str, str]:
        """``add`` each (clip id, signature) in order; {duplicate's id: the kept clip's id}."""
        found = {}
        for clip_id, sig in clips:
            kept = self.add(clip_id, sig)
            if kept is not None:
                found[clip_id] = kept
        return found


def keep_order(row: dict) -> tuple:
    """Sort key of the keep rule: longest, then largest area, then smallest clip id."""
    area = (row.get("width") or 0) * (row.get("height") or 0)
    return (-(row.get("duration_s") or 0.0), -area, row["clip_id"])


def duplicate_pairs(keys: np.ndarray, max_bucket: int = MAX_BUCKET) -> np.ndarray:
    """Candidate pairs (i, j), i < j, of clips sharing an LSH bucket whose keys differ in at
    most KEY_MAX_BITS bits; sorted by j, then i. Sort-based, one table at a time: memory
    O(N + pairs), time O(N log N) per table. A bucket with more than ``max_bucket`` clips
    (degenerate keys, e.g. thousands of near-black scenes) pairs each with its first ``max_bucket``."""
    keys = np.ascontiguousarray(keys, dtype=np.uint64)
    n = len(keys)
    found = []
    for t in range(LSH_TABLES):
        v = np.zeros(n, dtype=np.uint64)
        for j, pos in enumerate(LSH_POSITIONS[t]):
            v |= ((keys >> pos) & np.uint64(1)) << np.uint64(j)
        order = np.argsort(v, kind="stable")  # equal buckets stay in clip order
        sv = v[order]
        starts = np.flatnonzero(np.r_[True, sv[1:] != sv[:-1]])
        sizes = np.diff(np.r_[starts, n])
        two = starts[sizes == 2]  # the common case, vectorised
        found.append(np.stack([order[two], order[two + 1]], axis=1))
        for s, size in zip(starts[sizes > 2], sizes[sizes > 2], strict=True):
            members = order[s : s + size]
            head, rest = members[:max_bucket], members[max_bucket:]
            ii, jj = np.triu_indices(len(head), 1)
            found.append(np.stack([head[ii], head[jj]], axis=1))
            if len(rest):
                found.append(np.stack([np.repeat(head, len(rest)), np.tile(rest, len(head))], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    both = np.concatenate(found).astype(np.int64)
    both = both[popcount64(keys[both[:, 0]] ^ keys[both[:, 1]]) <= KEY_MAX_BITS]
    code = np.unique(both[:, 1] * n + both[:, 0])  # sorted by j, then i; each pair once
    return np.stack([code % n, code // n], axis=1)


def assign_duplicates(keys: np.ndarray, signature: Callable[[int], Signature],
                      params: DedupParams = DedupParams()) -> tuple[np.ndarray, int]:
    """Clips 0..N-1 given best-first (keep order): ``dup_of[j]`` is the first kept clip i < j
    that j matches, or -1 (kept). The same answer as feeding ``DedupIndex`` in that order.
    Returns (dup_of, verifications made)."""
    dup_of = np.full(len(keys), -1, dtype=np.int64)
    verified = 0
    decided = -1
    for i, j in duplicate_pairs(keys):
        if j == decided or dup_of[i] >= 0:  # j already matched, or i is itself a duplicate
            continue
        a, b = signature(int(i)), signature(int(j))
        if a.kind != b.kind:
            continue
        verified += 1
        if KINDS[a.kind][1](a, b, params):
            dup_of[j] = i
            decided = j
    return dup_of, verified


def find_duplicates(rows: Iterable[dict], params: DedupParams = DedupParams()) -> dict[str, str]:
    """{duplicate clip id: kept clip id} over rows with ``clip_id``, ``signature`` (bytes),
    ``duration_s``, ``width``, ``height``. Rows without a signature are never matched.
    The keep rule decides which clip of a group is kept (``keep_order``)."""
    ordered = sorted((r for r in rows if r.get("signature")), key=keep_order)
    sigs = [Signature.from_bytes(signature_bytes(r["signature"]) or b"") for r in ordered]
    keys = np.array([KINDS[s.kind][0](s) for s in sigs], dtype=np.uint64)
    dup_of, _ = assign_duplicates(keys, sigs.__getitem__, params)
    return {ordered[j]["clip_id"]: ordered[i]["clip_id"] for j, i in enumerate(dup_of) if i >= 0}


def groups_of(duplicates: dict[str, str]) -> dict[str, list[str]]:
    """{kept: sorted duplicates}"""
    out: dict[str, list[str]] = {}
    for dup, kept in duplicates.items():
        out.setdefault(kept, []).append(dup)
    return {k: sorted(v) for k, v in sorted(out.items())}


# --- the dedup stage of `kvid curate` (on by default; see curate/stage.py) -----------------


SIGNED_COLUMNS = ["clip_id", "signature", "duration_s", "width", "height"]


def signed_rows(out_dir: str) -> list[dict]:
    """SIGNED_COLUMNS of every clip in ``out_dir`` (clips curated before signatures existed
    have none)."""
    return shards.read_index(out_dir, SIGNED_COLUMNS).to_pylist()


def folder_index(rows: list[dict], params: DedupParams) -> DedupIndex:
    """A DedupIndex of a folder's clips (rows with ``clip_id``, ``signature``, ``duration_s``,
    ``width``, ``height``), best first, so the kept ones are the rule's choice where the
    folder itself holds copies."""
    index = DedupIndex(params)
    for r in sorted((r for r in rows if r["signature"]), key=keep_order):
        index.add(r["clip_id"], Signature.from_bytes(r["signature"]))
    return index


def mark_duplicate(rec: schema.ClipRecord, kept: str) -> schema.ClipRecord:
    """``rec`` as a ``duplicate`` reject of clip ``kept``."""
    rec.duplicate_of = kept
    return rec.reject(schema.STAGE_DEDUP, schema.REASON_DUPLICATE, f"near copy of clip {kept}")


class DedupStage(Stage):
    """Between analysis and transcode: one worker holds a DedupIndex of the clips kept so far
    (the output folder's, given at start, then this run's) and matches every analysed scene
    against it. A near copy becomes a ``duplicate`` reject and is never encoded.

    Which copy is kept: a clip already in the output folder always wins (it is written);
    within a run the first copy to arrive wins (arrival order follows Ray's scheduling, so
    the kept copy may differ between runs; the groups do not). `kvid dedup DIR` sees every
    clip at once and keeps the best by ``keep_order``."""

    name = "dedup"
    stateful = True  # the index of kept clips lives in one worker for the whole run

    def placement(self, cluster: Cluster) -> Placement:
        # One worker holds the index. Dict look-ups, a few ms a scene: it reserves no CPU. Even a
        # quarter held for the whole run left 1.75 of a 2-CPU machine, room for one decode or
        # encode at a time instead of two.
        return Placement(Resources(cpus=0), workers=1)

    def __init__(self, folder_rows: list[dict], params: DedupParams):
        self.folder_rows = folder_rows
        self.params = params
        self.index: DedupIndex | None = None

    @classmethod
    def for_folder(cls, out_dir: str, params: DedupParams) -> DedupStage:
        """The stage for a run into ``out_dir``: its clips, read here (on the driver: a worker's
        node may not see the folder), are the copies every new scene is matched against first."""
        return cls([r for r in signed_rows(out_dir) if r["signature"]], params)

    def setup(self) -> None:
        self.index = folder_index(self.folder_rows, self.params)

    def process(self, rows: list[dict]) -> list[dict]:
        """Encode group rows (``{"unit", "scenes"}``, on their way to the encoder) lose their
        near copies, which become reject rows of their own; other rows pass."""
        if self.index is None:
            self.setup()
        assert self.index is not None
        out = []
        for row in rows:
            if SCENES not in row:
                out.append(row)
                continue
            kept = []
            for scene in row[SCENES]:
                blob = signature_bytes(scene.get("signature"))
                copy_of = self.index.add(scene["clip_id"], Signature.from_bytes(blob)) if blob else None
                if copy_of is None:
                    kept.append(scene)
                else:
                    out.append(mark_duplicate(schema.ClipRecord.from_row(scene), copy_of).to_row())  # never encoded
            if kept:
                out.append({**row, SCENES: kept})
        return out
