"""Weights: official Kandinsky Video 1.1 checkpoints, safetensors conversion, our own save/load.

Official folder (the files of the hub repo ``ai-forever/KandinskyVideo_1_1``, downloaded by you)::

    t2v.pt              {'unet': state_dict, 'null_embedding': tensor}   keyframe + first-frame U-Net
    interpolation.pt    {'unet': state_dict, 'null_embedding': tensor}   interpolation U-Net
    t5_projections.pt   {'projection_base': sd, 'projection_interpolation': sd}
    movq.pt             image MoVQ state dict (encoder.*, quant_conv.*, post_quant_conv.*, decoder.*)
    video_movq.pt       temporal MoVQ state dict (same layout, temporal decoder)
    configs.json        optional; architecture hyper-parameters (our presets are used when absent)

Our modules mirror the official attribute names, so the key mapping is the identity plus the
explicit table below (the null embedding moves into the U-Net as a buffer; a few keys that the
released pipeline never uses are dropped by name). Anything else unknown or missing is refused
with the list of keys. ``.pt`` files are read with ``torch.load(weights_only=True)`` only;
``convert_official_to_safetensors`` writes ``*.safetensors`` beside them once, and those are
preferred afterwards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curate.version import KVID_VERSION


class MissingWeightsError(FileNotFoundError):
    """Weights that a component needs are absent; the message says which files and how to fix it."""


OFFICIAL_FILES: dict[str, str] = {
    "unet": "t2v.pt",
    "interpolation_unet": "interpolation.pt",
    "text_projection": "t5_projections.pt",
    "movq": "movq.pt",
    "video_movq": "video_movq.pt",
}
OFFICIAL_CONFIG_FILE = "configs.json"
OFFICIAL_REPO = "ai-forever/KandinskyVideo_1_1"

# keys present in official files that the released inference pipeline never reads, by component
OFFICIAL_UNUSED_PREFIXES: dict[str, tuple[str, ...]] = {
    # the video MoVQ is used for decoding only; its encoder is an unused copy
    "video_movq": ("encoder.", "quant_conv."),
}
OFFICIAL_UNUSED_SUBSTRINGS: dict[str, tuple[str, ...]] = {
    # flicker-augmentation projection (training only; the official decode passes no aug embedding)
    "video_movq": (".temporal_flicker_proj.",),
    "movq": (".temporal_flicker_proj.",),
}


class CheckpointKeyError(KeyError):
    """A state dict does not match the module: lists unknown, missing and mis-shaped keys."""

    def __init__(self, component: str, unknown: list[str], missing: list[str], mismatched: list[str]):
        self.component, self.unknown, self.missing, self.mismatched = component, unknown, missing, mismatched

        def show(title: str, keys: list[str]) -> str:
            if not keys:
                return ""
            head = "\n    ".join(keys[:25])
            more = f"\n    ... and {len(keys) - 25} more" if len(keys) > 25 else ""
            return f"\n  {title} ({len(keys)}):\n    {head}{more}"

        msg = (
            f"checkpoint for {component} does not match the model"
            + show("unknown keys (in the file, not in the model)", unknown)
            + show("missing keys (in the model, not in the file)", missing)
            + show("shape mismatches", mismatched)
            + "\n  Check that the file belongs to this component and that the config matches it."
        )
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


def load_state_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``.safetensors`` file or a pickle with ``torch.load(weights_only=True)`` (mmap when possible)."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not a zip-format file: mmap unsupported
        return torch.load(path, map_location="cpu", weights_only=True)


def map_official_state_dict(component: str, raw: Mapping[str, Any], module: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Official file content -> our state dict for ``component`` (see module docstring).

    ``module`` tells whether the target has an encoder etc. (only used for the MoVQs).
    """
    if component in ("unet", "interpolation_unet"):
        if "unet" in raw:  # official pickle layout
            state = dict(raw["unet"])
            if "null_embedding" not in raw:
                raise CheckpointKeyError(component, [], ["null_embedding"], [])
            state["null_embedding"] = raw["null_embedding"]
        else:  # our safetensors conversion (flat, null_embedding included)
            state = dict(raw)
        if "null_embedding" in state:
            state["null_embedding"] = torch.as_tensor(state["null_embedding"]).reshape(-1)
        return state
    if component == "text_projection":
        if "projection_base" in raw:
            return dict(raw["projection_base"])
        return {k[len("projection_base."):]: v for k, v in raw.items() if k.startswith("projection_base.")} or dict(raw)
    if component in ("movq", "video_movq"):
        state = dict(raw)
        drop_prefixes = list(OFFICIAL_UNUSED_PREFIXES.get(component, ()))
        if module is not None and hasattr(module, "encoder"):
            drop_prefixes = [p for p in drop_prefixes if p not in ("encoder.", "quant_conv.")]
        subs = OFFICIAL_UNUSED_SUBSTRINGS.get(component, ())
        return {
            k: v for k, v in state.items()
            if not any(k.startswith(p) for p in drop_prefixes) and not any(s in k for s in subs)
        }
    raise ValueError(f"unknown component {component!r}; expected one of {sorted(OFFICIAL_FILES)}")


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], component: str) -> None:
    """Raise :class:`CheckpointKeyError` unless ``state`` has exactly the module's keys and shapes."""
    expected = module.state_dict()
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if tuple(torch.as_tensor(state[k]).shape) != tuple(expected[k].shape)
    )
    if unknown or missing or mismatched:
        raise CheckpointKeyError(component, unknown, missing, mismatched)


def load_checked(module: nn.Module, state: Mapping[str, torch.Tensor], component: str) -> nn.Module:
    """Strictly load ``state`` into ``module`` after a readable key/shape check.

    Works for modules built on the meta device too (tensors are assigned, not copied).
    """
    check_state_dict(module, state, component)
    on_meta = any(t.is_meta for t in list(module.parameters()) + list(module.buffers()))
    if on_meta:  # tensors keep the file's dtype; callers convert with .to(dtype)
        module.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True, assign=True)
    else:
        module.load_state_dict(state, strict=True)
    return module


def find_official_file(folder: str | os.PathLike, component: str) -> Path:
    """The file for ``component`` in an official folder, preferring our safetensors conversion."""
    folder = Path(folder)
    name = OFFICIAL_FILES[component]
    for candidate in (folder / Path(name).with_suffix(".safetensors"), folder / name):
        if candidate.is_file():
            return candidate
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise MissingWeightsError(
        f"missing weights for {component}: expected {folder / name} (or {Path(name).with_suffix('.safetensors')}).\n"
        f"  An official folder holds: {', '.join(OFFICIAL_FILES.values())} (+ optional {OFFICIAL_CONFIG_FILE}),\n"
        f"  downloaded from the hub repo {OFFICIAL_REPO}, e.g. `huggingface-cli download {OFFICIAL_REPO} "
        f"--local-dir {folder}`.\n"
        f"  Found in {folder}: {present if present else 'nothing (folder absent or empty)'}"
    )


def check_official_folder(folder: str | os.PathLike, components: Iterable[str] | None = None) -> dict[str, Path]:
    """Resolve every needed file at once so a missing one fails before anything heavy is loaded."""
    comps = list(components) if components is not None else list(OFFICIAL_FILES)
    found, missing = {}, []
    for c in comps:
        try:
            found[c] = find_official_file(folder, c)
        except MissingWeightsError:
            missing.append(OFFICIAL_FILES[c])
    if missing:
        present = sorted(p.name for p in Path(folder).iterdir()) if Path(folder).is_dir() else []
        raise MissingWeightsError(
            f"official Kandinsky Video 1.1 weights incomplete in {folder}: missing {missing}.\n"
            f"  Expected files: {', '.join(OFFICIAL_FILES.values())} (+ optional {OFFICIAL_CONFIG_FILE}), "
            f"from the hub repo {OFFICIAL_REPO} (`huggingface-cli download {OFFICIAL_REPO} --local-dir {folder}`); "
            f"`.safetensors` conversions of them are accepted too.\n"
            f"  Found: {present if present else 'nothing (folder absent or empty)'}"
        )
    return found


def read_official_configs(folder: str | os.PathLike) -> dict[str, Any] | None:
    """Parse ``configs.json`` if present: ``{'t2v': ..., 'interpolation': ..., 'text_encoder': ...,
    'image_movq': ..., 'video_movq': ...}``; each model section may wrap its kwargs in ``configs``."""
    path = Path(folder) / OFFICIAL_CONFIG_FILE
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())

    def unwrap(section: Any) -> Any:
        if isinstance(section, dict) and set(section) == {"configs"}:
            return section["configs"]
        return section

    return {k: unwrap(v) for k, v in raw.items()}


def convert_official_to_safetensors(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> list[Path]:
    """Write ``*.safetensors`` next to (or into ``out``) every official ``.pt`` found; returns the new files.

    U-Net files become flat dicts with ``null_embedding``; ``t5_projections`` becomes
    ``projection_base.*`` / ``projection_interpolation.*``. Tensors are made contiguous.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    out_dir = Path(out) if out is not None else folder
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for component, name in OFFICIAL_FILES.items():
        src = folder / name
        if not src.is_file():
            continue
        raw = load_state_file(src)
        if component in ("unet", "interpolation_unet"):
            flat = map_official_state_dict(component, raw)
        elif component == "text_projection":
            flat = {f"{group}.{k}": v for group, sd in raw.items() for k, v in sd.items()}
        else:
            flat = dict(raw)
        flat = {k: torch.as_tensor(v).contiguous() for k, v in flat.items()}
        dst = out_dir / Path(name).with_suffix(".safetensors")
        tmp = dst.with_suffix(".safetensors.tmp")
        save_file(flat, str(tmp), metadata={"source": name, "converted_by": "kvid"})
        os.replace(tmp, dst)
        written.append(dst)
    if not written:
        check_official_folder(folder)  # raises with the list of expected files
    return written


# --------------------------------------------------------------------------------------------
# our format: one folder per component with config.json + model.safetensors


def save_component(module: nn.Module, folder: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"class": type(module).__name__, "config": module.config.to_dict(), "kvid_version": KVID_VERSION}
    if extra:
        meta.update(extra)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    tmp = folder / "model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(meta, indent=2))
    return folder


def load_component(folder: str | os.PathLike, cls: type[nn.Module], *, meta_init: bool = True) -> nn.Module:
    """Inverse of :func:`save_component`; exact (same tensors, same dtype as saved)."""
    folder = Path(folder)
    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    missing = [p.name for p in (cfg_path, weights) if not p.is_file()]
    if missing:
        raise MissingWeightsError(f"{folder} is not a saved {cls.__name__}: missing {missing} (written by save_component)")
    meta = json.loads(cfg_path.read_text())
    if meta.get("class") != cls.__name__:
        raise ValueError(f"{folder} holds a {meta.get('class')}, not a {cls.__name__}")
    config = cls.config_class.from_dict(meta["config"])
    state = load_state_file(weights)
    if meta_init:
        with torch.device("meta"):
            module = cls(config)
    else:
        module = cls(config)
    load_checked(module, state, component=cls.__name__)
    return module.eval()
