"""RAFT optical flow (torchvision ``raft_large`` / ``raft_small``) as a motion backend.

Weights:

- ``weights="default"``: torchvision's ``Raft_{Large,Small}_Weights.DEFAULT`` file from
  the torch hub cache (``$TORCH_HOME/hub/checkpoints/``). When the file is absent it is
  downloaded once, with bounded timeouts; when there is no network (or ``KVID_OFFLINE=1``
  or ``allow_download=False``) a ``MotionWeightsError`` says at once how to fix it.
- ``weights="/path/raft.pth"`` (or ``.safetensors``): a local state dict, loaded with
  ``torch.load(..., map_location="cpu", weights_only=True)`` and ``strict=True``.
  Anything else (text, random bytes, pickled objects, wrong keys) is refused clearly.
- ``weights=None``: random initialisation (tests and benchmarks only).

Inference: frames are normalised as torchvision's ``OpticalFlow`` transform does
(uint8 -> [-1, 1]), padded by edge replication to multiples of 8 (and to at least 128 px, RAFT's
minimum) and the flow cropped back; ``torch.inference_mode``; fp16/bf16 through CUDA autocast; the per-pair
statistics are computed on the device so only ``(N, 3)`` numbers come back.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np

from motion.flow import FlowBackend, MotionWeightsError, check_pairs, env_flag

#: CLI flags named in error messages (pipelines/cli.py maps them to config fields).
WEIGHTS_FLAG = "--motion-weights"
BACKEND_FLAG = "--motion-backend"
OFFLINE_ENV = "KVID_OFFLINE"

VARIANTS = ("raft_large", "raft_small")
_MIN_SIDE = 128
_DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16", "half": "float16",
           "bf16": "bfloat16", "bfloat16": "bfloat16"}


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown RAFT variant {variant!r}; choose raft_large or raft_small")
    return variant


def _weights_enum(variant: str):
    from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights

    return {"raft_large": Raft_Large_Weights, "raft_small": Raft_Small_Weights}[_check_variant(variant)]


def default_weights_url(variant: str = "raft_large") -> str:
    return _weights_enum(variant).DEFAULT.url


def default_weights_path(variant: str = "raft_large") -> str:
    """Where torchvision keeps the default weights file: ``<torch hub dir>/checkpoints/<file>``."""
    import torch.hub

    name = os.path.basename(urllib.parse.urlparse(default_weights_url(variant)).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", name)


def build_raft(variant: str = "raft_large"):
    """The torchvision RAFT module with random weights (fp32, CPU, eval mode)."""
    from torchvision.models.optical_flow import raft_large, raft_small

    fn = {"raft_large": raft_large, "raft_small": raft_small}[_check_variant(variant)]
    return fn(weights=None, progress=False).eval()


def _missing_weights_message(variant: str, path: str, why: str) -> str:
    """One line: what is missing and why, then the flags that fix it."""
    url = default_weights_url(variant)
    return (
        f"RAFT weights for {variant} are not available ({why}; the default file is not in the torch hub cache: "
        f"{path}): pass {WEIGHTS_FLAG} /path/to/{os.path.basename(path)} (download {url} on a machine with "
        f"internet), or score motion on CPU without weights with {BACKEND_FLAG} dis; or copy the file to {path} "
        f"(TORCH_HOME chooses the cache)"
    )


def _probe_network(url: str, timeout: float) -> str | None:
    """None when ``url`` answers an HTTPS HEAD request within ``timeout`` s, else why not.

    Runs in a daemon thread joined with a timeout, so neither a stalled resolver nor a
    black-holed connection (or an intercepting proxy that accepts and never answers)
    can hang the caller. Honours the usual proxy environment variables.
    """
    host = urllib.parse.urlparse(url).hostname or url
    result: list[str | None] = []

    def attempt() -> None:
        try:
            req = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status = getattr(r, "status", None) or 200  # file:// answers carry none
            result.append(None if status < 400 else f"{host} answered HTTP {status}")
        except Exception as e:  # URLError, HTTPError, socket errors, ssl errors
            result.append(f"cannot reach {host} ({e})")

    t = threading.Thread(target=attempt, daemon=True, name="kvid-raft-netprobe")
    t.start()
    t.join(timeout)
    if not result:
        return f"cannot reach {host} (no answer within {timeout:.0f} s)"
    return result[0]


def _download(url: str, dst: str, timeout: float) -> None:
    """Download ``url`` to ``dst`` atomically, checking torchvision's sha256 prefix in the name."""
    import torch.hub

    os.makedirs(os.path.dirname(dst), exist_ok=True)
    m = torch.hub.HASH_REGEX.search(os.path.basename(dst))
    prefix = m.group(1) if m else None
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), prefix=".kvid-dl-", suffix=".partial")
    try:
        sha = hashlib.sha256()
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:  # timeout per socket op
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                sha.update(chunk)
                f.write(chunk)
        if prefix and not sha.hexdigest().startswith(prefix):
            raise MotionWeightsError(f"downloaded {url} but its sha256 does not start with {prefix}")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resolve_default_weights(
    variant: str = "raft_large", allow_download: bool = True, timeout: float = 5.0
) -> str:
    """Path of the default weights file, downloading it once if needed and possible.

    Never waits long on a dead network: an HTTPS HEAD request bounded by ``timeout`` s runs
    first, and every socket read of the download is bounded too. Offline (no route,
    ``KVID_OFFLINE=1`` or ``allow_download=False``) raises ``MotionWeightsError`` naming the fix.
    """
    path = default_weights_path(variant)
    if os.path.isfile(path):
        return path
    if not allow_download or env_flag(OFFLINE_ENV):
        why = "downloads are disabled (" + (f"{OFFLINE_ENV}=1" if env_flag(OFFLINE_ENV) else "allow_download=False") + ")"
        raise MotionWeightsError(_missing_weights_message(variant, path, why))
    url = default_weights_url(variant)
    why = _probe_network(url, timeout)
    if why is not None:
        raise MotionWeightsError(_missing_weights_message(variant, path, f"no internet: {why}"))
    try:
        _download(url, path, timeout=max(timeout, 30.0))
    except MotionWeightsError:
        raise
    except Exception as e:  # network errors of every kind
        raise MotionWeightsError(_missing_weights_message(variant, path, f"download failed: {e}")) from e
    return path


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Any]:
    """A state dict (parameter name -> tensor) from a ``.pth``/``.pt`` or ``.safetensors`` file.

    Only ``torch.load(weights_only=True)``; refuses anything that is not a mapping of
    names to tensors, with a message that says what the file is instead.
    """
    import torch

    path = os.fspath(path)
    if not os.path.exists(path):
        raise MotionWeightsError(f"RAFT weights file not found: {path}")
    if not os.path.isfile(path):
        raise MotionWeightsError(f"RAFT weights path is not a file: {path}")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file

            obj: Any = load_file(path, device="cpu")
        except Exception as e:
            raise MotionWeightsError(f"{path} is not a valid safetensors weights file: {_first_line(e)}") from e
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise MotionWeightsError(
                f"{path} is not a PyTorch weights file: torch.load(weights_only=True) refused it "
                f"({_load_error(e)}); kvid never unpickles arbitrary objects. Pass the torchvision RAFT "
                f"file ({os.path.basename(default_weights_path('raft_large'))} or "
                f"{os.path.basename(default_weights_path('raft_small'))}) or a .safetensors export of it."
            ) from e
    # Training checkpoints often wrap the weights one level down.
    if isinstance(obj, Mapping) and len(obj) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise MotionWeightsError(
            f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of parameter names to tensors)"
        )
    if not obj:
        raise MotionWeightsError(f"{path} holds an empty state dict")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        example = bad[0]
        raise MotionWeightsError(
            f"{path} is not a state dict: {len(bad)} entries are not name -> tensor "
            f"(e.g. {example!r}: {type(obj[example]).__name__})"
        )
    return dict(obj)


def _load_error(e: BaseException) -> str:
    """The useful part of torch.load's error (its text advises weights_only=False; we never do)."""
    text = str(e)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = text.split(marker, 1)[1].split("Check the documentation", 1)[0]
        detail = " ".join(detail.split())
        detail = detail.split(". Please use", 1)[0]
        return f"unsafe or unknown pickle content: {detail[:200]}"
    return _first_line(e)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def load_raft_weights(model, variant: str, path: str | os.PathLike) -> None:
    """Load a local weights file into ``model`` with ``strict=True``; refuse mismatches clearly."""
    sd = load_state_dict_file(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shape_bad = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shape_bad:
        hint = ""
        other = "raft_small" if variant == "raft_large" else "raft_large"
        other_sd = build_raft(other).state_dict()
        if set(sd) == set(other_sd) and all(tuple(sd[k].shape) == tuple(other_sd[k].shape) for k in sd):
            hint = f" These are {other} weights: use {BACKEND_FLAG} {other}."
        elif any(k.startswith("module.") or k.startswith("fnet.") for k in sd):
            hint = " (Keys look like the original princeton-vl RAFT checkpoint; use torchvision's RAFT weights.)"
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shape_bad:
            k = shape_bad[0]
            parts.append(f"{len(shape_bad)} with wrong shapes (e.g. {k}: {tuple(sd[k].shape)} != {tuple(expected[k].shape)})")
        raise MotionWeightsError(
            f"{os.fspath(path)} is not a torchvision {variant} state dict: keys " + "; ".join(parts) + "." + hint
        )
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # dtype or other problems the checks above did not catch
        raise MotionWeightsError(f"{os.fspath(path)} does not load into {variant}: {_first_line(e)}") from e


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu' or --motion-backend dis")
    torch.device(device)  # validates the string
    return device


def resolve_dtype(dtype: str | None, device: str) -> str:
    """'float32', 'float16' or 'bfloat16'. 'auto': bf16 on CUDA, fp32 on CPU."""
    if dtype in (None, "", "auto"):
        return "bfloat16" if device.startswith("cuda") else "float32"
    key = str(dtype).lower().replace("torch.", "")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose fp32, fp16 or bf16")
    out = _DTYPES[key]
    if out != "float32" and not device.startswith("cuda"):
        raise ValueError(f"dtype {dtype} needs a CUDA device (got {device}); RAFT on CPU runs in fp32")
    return out


class RaftBackend(FlowBackend):
    """torchvision RAFT, batched over frame pairs."""

    def __init__(
        self,
        variant: str = "raft_large",
        device: str = "auto",
        dtype: str = "auto",
        weights: str | os.PathLike | None = "default",
        num_flow_updates: int = 12,
        allow_download: bool = True,
        download_timeout: float = 5.0,
        seed: int = 0,
    ):
        self.name = _check_variant(variant)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if weights is not None and not isinstance(weights, (str, os.PathLike)):
            raise TypeError("weights must be 'default', a path to a .pth/.safetensors file, or None (random init)")
        self.weights = os.fspath(weights) if weights is not None else None
        if int(num_flow_updates) < 1:
            raise ValueError("num_flow_updates must be >= 1")
        self.num_flow_updates = int(num_flow_updates)
        self.allow_download = allow_download
        self.download_timeout = float(download_timeout)
        self.seed = seed
        self.default_batch_size = 32 if self.device.startswith("cuda") else 4
        self.weights_path: str | None = None
        self.model = None

    def setup(self) -> None:
        if self.model is not None:
            return
        import torch

        if self.weights == "default":
            path: str | None = resolve_default_weights(self.name, self.allow_download, self.download_timeout)
        elif self.weights is None:
            path = None
        else:
            path = self.weights
        if path is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = build_raft(self.name)
        else:
            model = build_raft(self.name)
            load_raft_weights(model, self.name, path)
        model.requires_grad_(False).eval()
        if self.device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True
        self.model = model.to(self.device)
        self.weights_path = path

    def _flow_tensor(self, frames_a: np.ndarray, frames_b: np.ndarray):
        """Flow ``(N, 2, H, W)`` float32 on the device."""
        import torch
        import torch.nn.functional as F

        check_pairs(frames_a, frames_b)
        self.setup()
        n, h, w, _ = frames_a.shape
        # RAFT needs multiples of 8 and at least 128 px (its 4-level correlation pyramid).
        pad_h, pad_w = max((-h) % 8, _MIN_SIDE - h), max((-w) % 8, _MIN_SIDE - w)
        top, left = pad_h // 2, pad_w // 2
        pin = self.device.startswith("cuda")

        def prep(frames: np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(frames))
            if pin:
                t = t.pin_memory()
            t = t.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
            t = t.div_(127.5).sub_(1.0)  # torchvision OpticalFlow: [0, 1] then normalize(0.5, 0.5)
            if pad_h or pad_w:
                t = F.pad(t, (left, pad_w - left, top, pad_h - top), mode="replicate")
            return t.contiguous()

        with torch.inference_mode():
            a, b = prep(frames_a), prep(frames_b)
            if self.dtype == "float32":
                preds = self.model(a, b, num_flow_updates=self.num_flow_updates)
            else:
                with torch.autocast("cuda", dtype=getattr(torch, self.dtype)):
                    preds = self.model(a, b, num_flow_updates=self.num_flow_updates)
            flow = preds[-1].float()[:, :, top : top + h, left : left + w]
        return flow

    def _flow(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        return self._flow_tensor(frames_a, frames_b).permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)

    def pair_stats(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        import torch

        flow = self._flow_tensor(frames_a, frames_b)
        with torch.inference_mode():
            n = flow.shape[0]
            flat = flow.reshape(n, 2, -1)
            mean = torch.linalg.vector_norm(flat, dim=1).mean(dim=1, dtype=torch.float64)
            med = flat.median(dim=2).values  # (N, 2); lower median for an even pixel count
            camera = torch.linalg.vector_norm(med.double(), dim=1)
            obj = torch.linalg.vector_norm(flat - med[:, :, None], dim=1).mean(dim=1, dtype=torch.float64)
            out = torch.stack([mean, camera, obj], dim=1)
        return out.cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": self.device,
            "dtype": self.dtype,
            "weights": self.weights if self.weights != "default" else f"default ({default_weights_url(self.name)})",
            "num_flow_updates": self.num_flow_updates,
        }
