"""Where a caption model's files are, and whether kvid may fetch them.

Weights are never fetched silently offline: when ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``
is set, or a quick connection test to the hub fails, everything loads with
``local_files_only=True`` and a missing model fails at once with ``CaptionModelError``
naming the model and the fix. ``inspect_model`` answers at start, before any actor loads it.
"""

from __future__ import annotations

import functools
import glob
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

from caption.errors import CaptionModelError
from caption.families import FAMILIES, FamilySpec, family_for_model_type

_TRUE = {"1", "true", "yes", "on"}


def offline_requested() -> bool:
    """HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set to a true value."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=4)
def hub_reachable(endpoint: str | None = None, timeout: float = 2.0) -> bool:
    """Can we open a TCP connection to the hub (HF_ENDPOINT) within ``timeout`` seconds?"""
    url = urlparse(endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


#: the flag named in error messages (`kvid curate`; `kvid caption` accepts it as well)
CAPTION_MODEL_FLAG = "--caption-model"


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or os.path.exists(model)


def resolve_local_files_only(model: str, offline: bool | None = None) -> bool:
    """Whether loading ``model`` must stay on local files (never touch the network)."""
    if os.path.isdir(os.path.expanduser(model)):
        return True
    if offline is not None:
        return bool(offline)
    if offline_requested():
        return True
    return not hub_reachable()


def missing_model_message(model: str, detail: str = "") -> str:
    """One line: what is missing, then the flags that fix it."""
    detail = f" ({detail.strip().splitlines()[-1][:300]})" if detail and detail.strip() else ""
    return (
        f"caption model {model!r} is not in the Hugging Face cache and cannot be downloaded here{detail}: "
        f"on a machine with internet run `huggingface-cli download {model}` (or `hf download {model}`), copy the "
        f"folder here and pass its local path with {CAPTION_MODEL_FLAG} PATH (or point HF_HOME at a cache that "
        f"holds it); or turn captioning off with {CAPTION_MODEL_FLAG} none"
    )


@dataclass(frozen=True)
class ModelSpec:
    """What ``inspect_model`` learned without loading weights."""

    model: str  # as given
    family: FamilySpec
    model_type: str
    local_files_only: bool
    frame_short_side: int


_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json")


def _has_local_weights(model: str, local_files_only: bool) -> bool:
    path = os.path.expanduser(model)
    if os.path.isdir(path):
        return any(glob.glob(os.path.join(path, pat)) for pat in _WEIGHT_PATTERNS)
    if not local_files_only:
        return True  # will download in setup
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return True
    for name in ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                 "pytorch_model.bin"):
        found = try_to_load_from_cache(model, name)
        if isinstance(found, str):
            return True
    return False


def inspect_model(model: str, *, offline: bool | None = None, check_weights: bool = True) -> ModelSpec:
    """Resolve ``model`` (hub id or local folder) to its family, fast and without weights.

    Reads only the config (from the local folder or cache when offline). Raises
    ``CaptionModelError`` with the fix when the model is missing or of an unsupported type.
    Pipelines call this on the driver at start; actors then load the weights in setup().
    """
    if not isinstance(model, str) or not model.strip():
        raise CaptionModelError("no caption model given: pass a hub id (e.g. "
                                f"{FAMILIES['qwen2_5_vl'].example}) or a local folder")
    from transformers import AutoConfig

    path = os.path.expanduser(model)
    if _looks_like_path(model) and not os.path.isdir(path):
        raise CaptionModelError(
            f"caption model folder {model!r} does not exist. Fix: pass the folder that "
            f"`huggingface-cli download <id>` wrote (it holds config.json, the weights and the processor "
            f"files), or a hub id such as {FAMILIES['qwen2_5_vl'].example}; or turn captioning off with "
            f"{CAPTION_MODEL_FLAG} none."
        )
    local_files_only = resolve_local_files_only(model, offline)
    try:
        config = AutoConfig.from_pretrained(path if os.path.isdir(path) else model, local_files_only=local_files_only)
    except (OSError, ValueError) as e:
        if os.path.isdir(path):
            raise CaptionModelError(
                f"caption model folder {model!r} has no usable config.json ({e}). Pass the folder that "
                f"`huggingface-cli download <id>` produced (it holds config.json, the weights and the processor files)."
            ) from e
        raise CaptionModelError(missing_model_message(model, str(e))) from e
    spec = family_for_model_type(getattr(config, "model_type", None), model)
    if check_weights and not _has_local_weights(model, local_files_only):
        raise CaptionModelError(missing_model_message(model, "config found but no weight files"))
    return ModelSpec(model=model, family=spec, model_type=config.model_type, local_files_only=local_files_only,
                     frame_short_side=spec.frame_short_side)
