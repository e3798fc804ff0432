"""Caption backends: one interface over transformers video VLMs (and vLLM when installed).

``load_backend(model_id_or_path, ...)`` reads the model's config, picks the family by
``model_type`` and returns a ``CaptionBackend`` whose ``generate(batch, prompt,
max_new_tokens)`` captions a batch of clips (``ClipFrames``) in one padded forward pass:
left padding, greedy decoding, only the new tokens decoded.

The families it knows: caption/families.py; where a model's files are and whether they may
be fetched: caption/model_files.py.
"""

from __future__ import annotations

import abc
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from caption.errors import CaptionBackendUnavailable, CaptionModelError
from caption.families import FAMILIES, FamilySpec
from caption.model_files import inspect_model, missing_model_message
from caption.sampling import ClipFrames

log = logging.getLogger(__name__)

BACKENDS = ("transformers", "vllm", "auto")




class CaptionBackend(abc.ABC):
    """Captions batches of clips. Subclasses load a model once and keep it."""

    #: the model id or path as given (stored as ``caption_model``)
    model_name: str = ""
    family: FamilySpec
    #: short side to decode clips at for this model's processor
    frame_short_side: int | None = None
    #: generated tokens in the last ``generate`` call (up to and including EOS)
    last_num_output_tokens: int = 0

    @abc.abstractmethod
    def generate(self, batch: Sequence[ClipFrames], prompt: str | Sequence[str], max_new_tokens: int) -> list[str]:
        """Raw generated text for each clip (same order). ``prompt``: one for all, or one per clip."""

    def render_prompt(self, text: str) -> str:
        """The full model input text (chat template, video placeholder) for one instruction."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 (optional: backends that hold nothing need not override it)
        """Release the model (GPU memory)."""

    @staticmethod
    def _prompts(batch: Sequence[ClipFrames], prompt: str | Sequence[str]) -> list[str]:
        if isinstance(prompt, str):
            return [prompt] * len(batch)
        prompts = list(prompt)
        if len(prompts) != len(batch):
            raise ValueError(f"{len(prompts)} prompts for {len(batch)} clips")
        return prompts


def _resolve_device(device: Any) -> str:
    import torch

    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _resolve_dtype(dtype: Any, device: str):
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}
    if str(dtype).lower() not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[str(dtype).lower()]


class TransformersBackend(CaptionBackend):
    """A transformers VLM: batched, left-padded, greedy ``model.generate``."""

    def __init__(
        self,
        model,
        processor,
        family: FamilySpec | str,
        *,
        model_name: str = "",
        generation_kwargs: dict | None = None,
        chat_template: str | None = None,
    ):
        import torch

        self.model = model
        self.processor = processor
        self.family = FAMILIES[family] if isinstance(family, str) else family
        self.model_name = model_name or getattr(model, "name_or_path", "") or self.family.name
        self.generation_kwargs = dict(generation_kwargs or {})
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # The checkpoint's own template wins; ours is the family's format.
        self._chat_template = chat_template or (None if getattr(processor, "chat_template", None)
                                                else self.family.chat_template)
        self.frame_short_side = self._processor_short_side()
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self._render_cache: dict[str, str] = {}
        self._torch = torch

    def _processor_short_side(self) -> int:
        vp = getattr(self.processor, "video_processor", None)
        size = getattr(vp, "size", None) or {}
        get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
        if self.family.name in ("llava_next_video",) and get("shortest_edge"):
            return int(get("shortest_edge"))
        if self.family.name == "llava_onevision" and get("height"):
            return int(min(get("height"), get("width") or get("height")))
        if self.family.name == "smolvlm":
            mis = getattr(vp, "max_image_size", None) or {}
            edge = mis.get("longest_edge") if isinstance(mis, dict) else getattr(mis, "longest_edge", None)
            if edge:
                return int(edge)
        return self.family.frame_short_side

    def render_prompt(self, text: str) -> str:
        cached = self._render_cache.get(text)
        if cached is None:
            messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
            cached = self.processor.apply_chat_template(
                messages, chat_template=self._chat_template, add_generation_prompt=True, tokenize=False
            )
            if self.family.video_token not in cached:
                raise CaptionModelError(
                    f"the chat template of {self.model_name!r} wrote no video placeholder "
                    f"{self.family.video_token!r}; pass a chat_template that places the video"
                )
            if len(self._render_cache) < 256:
                self._render_cache[text] = cached
        return cached

    def _video_kwargs(self) -> dict:
        vp = getattr(self.processor, "video_processor", None)
        valid = set(getattr(getattr(vp, "valid_kwargs", None), "__annotations__", {}))
        for base in type(vp).__mro__ if vp is not None else ():
            valid |= set(getattr(getattr(base, "valid_kwargs", None), "__annotations__", {}) or {})
        kw = {"do_sample_frames": False}
        if "cap_pixels_per_frame" in valid and getattr(vp, "cap_pixels_per_frame", None) is None:
            kw["cap_pixels_per_frame"] = True  # the reference (qwen-vl-utils) pixel budget
        return kw

    def prepare_inputs(self, batch: Sequence[ClipFrames], prompts: Sequence[str]):
        """Processor outputs for one padded batch (on the model's device and dtype)."""
        texts = [self.render_prompt(p) for p in prompts]
        inputs = self.processor(
            text=texts,
            videos=[c.frames for c in batch],
            video_metadata=[c.metadata() for c in batch],
            padding=True,
            return_tensors="pt",
            **self._video_kwargs(),
        )
        inputs.pop("video_metadata", None)
        return inputs.to(self.device, dtype=self.dtype)

    def _groups(self, batch: Sequence[ClipFrames]) -> list[list[int]]:
        if not self.family.same_frame_count:
            return [list(range(len(batch)))]
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(batch):
            groups.setdefault(c.num_frames, []).append(i)
        return list(groups.values())

    def _count_new_tokens(self, new_ids) -> int:
        total = 0
        for row in new_ids.tolist():
            n = len(row)
            for j, t in enumerate(row):
                if t in self._eos_ids:
                    n = j + 1
                    break
            total += n
        return total

    def generate(self, batch: Sequence[ClipFrames], prompt: str | Sequence[str], max_new_tokens: int) -> list[str]:
        prompts = self._prompts(batch, prompt)
        out: list[str | None] = [None] * len(batch)
        self.last_num_output_tokens = 0
        torch = self._torch
        for idx in self._groups(batch):
            inputs = self.prepare_inputs([batch[i] for i in idx], [prompts[i] for i in idx])
            gen = dict(do_sample=False, num_beams=1, max_new_tokens=int(max_new_tokens),
                       pad_token_id=self.tokenizer.pad_token_id)
            gen.update(self.generation_kwargs)
            with torch.inference_mode():
                ids = self.model.generate(**inputs, **gen)
            new = ids[:, inputs["input_ids"].shape[1]:]
            self.last_num_output_tokens += self._count_new_tokens(new)
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            for i, t in zip(idx, texts):
                out[i] = t
        return [t if t is not None else "" for t in out]

    def close(self) -> None:
        self.model = None
        torch = self._torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _import_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise CaptionBackendUnavailable(
            "the vLLM caption backend needs the vllm package, which is not installed: "
            "`pip install kvid[vllm]` (Linux + CUDA), or use backend='transformers'"
        ) from e
    return vllm


def vllm_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


class VLLMBackend(CaptionBackend):
    """vLLM offline engine (continuous batching, paged attention). Same interface.

    ``generate`` hands the whole batch to ``LLM.generate``; vLLM schedules it itself, so a
    larger ``batch_size`` in the stage simply gives it more to overlap. The prompt is
    rendered with the checkpoint's processor chat template (ours when it has none); frames
    go in as ``multi_modal_data={"video": frames}``.
    """

    def __init__(
        self,
        model: str,
        family: FamilySpec,
        *,
        local_files_only: bool = True,
        dtype: str = "bfloat16",
        max_model_len: int = 16384,
        gpu_memory_utilization: float = 0.9,
        max_frames: int = 32,
        seed: int = 0,
        min_new_tokens: int = 0,
        load_format: str = "auto",
        **llm_kwargs,
    ):
        vllm = _import_vllm()
        from transformers import AutoProcessor

        self.model_name = model
        self.family = family
        self.frame_short_side = family.frame_short_side
        self.min_new_tokens = int(min_new_tokens)
        self._SamplingParams = vllm.SamplingParams
        self.processor = AutoProcessor.from_pretrained(model, local_files_only=local_files_only)
        self._chat_template = None if getattr(self.processor, "chat_template", None) else family.chat_template
        self.llm = vllm.LLM(
            model=model,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            limit_mm_per_prompt={"video": 1, "image": 0},
            seed=seed,
            load_format=load_format,
            **llm_kwargs,
        )

    def render_prompt(self, text: str) -> str:
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
        return self.processor.apply_chat_template(
            messages, chat_template=self._chat_template, add_generation_prompt=True, tokenize=False
        )

    def generate(self, batch: Sequence[ClipFrames], prompt: str | Sequence[str], max_new_tokens: int) -> list[str]:
        prompts = self._prompts(batch, prompt)
        params = self._SamplingParams(
            temperature=0.0, max_tokens=int(max_new_tokens),
            min_tokens=min(self.min_new_tokens, int(max_new_tokens)),
        )
        requests = [
            {"prompt": self.render_prompt(p), "multi_modal_data": {"video": c.frames}}
            for c, p in zip(batch, prompts)
        ]
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        self.last_num_output_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        return [o.outputs[0].text for o in outputs]

    def close(self) -> None:
        self.llm = None


def load_backend(
    model: str,
    device: Any = None,
    dtype: Any = None,
    *,
    backend: str = "transformers",
    offline: bool | None = None,
    attn_implementation: str = "sdpa",
    generation_kwargs: dict | None = None,
    chat_template: str | None = None,
    **backend_kwargs,
) -> CaptionBackend:
    """Load the caption model ``model`` (hub id or local folder) once; return its backend.

    ``device``: "cuda", "cuda:1", "cpu" or None/"auto" (CUDA when present). ``dtype``:
    None = bf16 on CUDA, fp32 on CPU. ``backend``: "transformers", "vllm" (needs
    ``pip install kvid[vllm]``) or "auto" (vLLM when installed and on CUDA).
    ``offline``: None = decide (HF_HUB_OFFLINE, or no route to the hub); True = local
    files only. ``generation_kwargs`` go to ``model.generate`` (e.g. ``min_new_tokens``).
    Raises ``CaptionModelError`` (missing model, unsupported family) before any weights load.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    started = time.monotonic()
    device = _resolve_device(device)
    if backend == "auto":
        backend = "vllm" if vllm_available() and device.startswith("cuda") else "transformers"
    if backend == "vllm":
        _import_vllm()  # the clear error before anything else
    spec = inspect_model(model, offline=offline)
    family = spec.family
    path = os.path.expanduser(model) if os.path.isdir(os.path.expanduser(model)) else model
    if backend == "vllm":
        kwargs = dict(backend_kwargs)
        if generation_kwargs and generation_kwargs.get("min_new_tokens"):
            kwargs.setdefault("min_new_tokens", generation_kwargs["min_new_tokens"])
        if dtype is not None:
            kwargs["dtype"] = str(dtype).replace("torch.", "")
        b = VLLMBackend(path, family, local_files_only=spec.local_files_only, **kwargs)
        b.model_name = model
        return b
    if backend_kwargs:
        raise TypeError(f"unexpected arguments for the transformers backend: {sorted(backend_kwargs)}")

    import transformers

    missing = [m for m in family.needs if not _importable(m)]
    if missing:
        raise CaptionModelError(
            f"the {family.name} processor needs the python package(s) {', '.join(missing)}: "
            f"`pip install {' '.join(missing)}`"
        )
    torch_dtype = _resolve_dtype(dtype, device)
    model_cls = getattr(transformers, family.model_class)
    try:
        processor = transformers.AutoProcessor.from_pretrained(path, local_files_only=spec.local_files_only)
        vlm = model_cls.from_pretrained(
            path, dtype=torch_dtype, attn_implementation=attn_implementation,
            local_files_only=spec.local_files_only,
        )
    except OSError as e:
        raise CaptionModelError(missing_model_message(model, str(e))) from e
    vlm.to(device)
    vlm.eval()
    b = TransformersBackend(vlm, processor, family, model_name=model, generation_kwargs=generation_kwargs,
                           chat_template=chat_template)
    log.info("caption model %s (%s) loaded on %s in %s in %.1f s", model, family.name, device, torch_dtype,
             time.monotonic() - started)
    return b


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
