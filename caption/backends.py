"""Caption backends: one interface over transformers video VLMs (and vLLM when installed).

``load_backend(model_id_or_path, ...)`` reads the model's config, picks the family by
``model_type`` and returns a ``CaptionBackend`` whose ``generate(batch, prompt,
max_new_tokens)`` captions a batch of clips (``ClipFrames``) in one padded forward pass:
left padding, greedy decoding, only the new tokens decoded.

Families (``FAMILIES``): Qwen2.5-VL and Qwen2-VL (video input with time-aware
position ids), LLaVA-NeXT-Video, LLaVA-OneVision (0.5B runs on modest GPUs) and SmolVLM2
(needs the ``num2words`` package for its processor). Each family has the chat template
and video placeholder its processor expects; a checkpoint's own chat template wins when
it ships one.

Weights are never fetched silently offline: when ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``
is set, or a quick connection test to the hub fails, everything loads with
``local_files_only=True`` and a missing model fails at once with ``CaptionModelError``
naming the model and the fix.
"""

from __future__ import annotations

import abc
import functools
import glob
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from caption.sampling import ClipFrames

log = logging.getLogger(__name__)

BACKENDS = ("transformers", "vllm", "auto")


class CaptionModelError(RuntimeError):
    """The caption model cannot be used (missing weights, unknown family, bad path)."""


class CaptionBackendUnavailable(CaptionModelError):
    """The requested backend's package is not installed."""


# --------------------------------------------------------------------------- families

# Chat templates (Jinja) in each family's prompt format: the video placeholder first,
# then the instruction, then the assistant turn. Used when a checkpoint ships none.
_QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Vicuna format of LLaVA-NeXT-Video-7B: "USER: <video>\n<text> ASSISTANT:".
_VICUNA_VIDEO_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ (message['content'] if message['content'] is string else message['content'][0]['text']) + ' ' }}"
    "{% else %}"
    "{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}{{ part['text'] + ' ' }}{% endfor %}"
    "{% endif %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# LLaVA-OneVision (Qwen2 LM): "<|im_start|>user <video>\n<text><|im_end|><|im_start|>assistant\n".
_ONEVISION_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ '\\n' + message['content'] }}{% else %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + part['text'] }}{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# SmolVLM2: "<|im_start|>User:<video><text><end_of_utterance>\nAssistant:" (the processor
# expands <video> into per-frame timestamps and image tokens).
_SMOLVLM_TEMPLATE = (
    "{{ '<|im_start|>' }}"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}{% else %}"
    "{% if message['content'][0]['type'] in ('image', 'video') %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'video' %}{{ '<video>' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<end_of_utterance>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


@dataclass(frozen=True)
class FamilySpec:
    """How to drive one model family through transformers."""

    name: str
    model_types: tuple[str, ...]
    model_class: str  # transformers class
    processor_class: str  # for the docs and the synthetic builders; loading uses AutoProcessor
    chat_template: str
    video_token: str  # placeholder the chat template writes; the processor expands it
    frame_short_side: int  # decode clips at this short side (the processor's input size)
    same_frame_count: bool  # a padded batch needs equal frame counts (stacked pixel tensors)
    needs: tuple[str, ...] = ()  # extra python packages its processor imports
    example: str = ""


FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec(
            "qwen2_5_vl", ("qwen2_5_vl",), "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor",
            _QWEN_TEMPLATE, "<|video_pad|>", 336, False, example="Qwen/Qwen2.5-VL-7B-Instruct",
        ),
        FamilySpec(
            "qwen2_vl", ("qwen2_vl",), "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor",
            _QWEN_TEMPLATE, "<|video_pad|>", 336, False, example="Qwen/Qwen2-VL-7B-Instruct",
        ),
        FamilySpec(
            "llava_next_video", ("llava_next_video",), "LlavaNextVideoForConditionalGeneration",
            "LlavaNextVideoProcessor", _VICUNA_VIDEO_TEMPLATE, "<video>", 336, True,
            example="llava-hf/LLaVA-NeXT-Video-7B-hf",
        ),
        FamilySpec(
            "llava_onevision", ("llava_onevision",), "LlavaOnevisionForConditionalGeneration",
            "LlavaOnevisionProcessor", _ONEVISION_TEMPLATE, "<video>", 384, True,
            example="llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        ),
        FamilySpec(
            "smolvlm", ("smolvlm",), "SmolVLMForConditionalGeneration", "SmolVLMProcessor",
            _SMOLVLM_TEMPLATE, "<video>", 384, True, needs=("num2words",),
            example="HuggingFaceTB/SmolVLM2-2.2B-Instruct",
        ),
    )
}

_BY_MODEL_TYPE = {mt: spec for spec in FAMILIES.values() for mt in spec.model_types}


def family_for_model_type(model_type: str | None, model: str = "") -> FamilySpec:
    spec = _BY_MODEL_TYPE.get(model_type or "")
    if spec is None:
        supported = ", ".join(sorted(_BY_MODEL_TYPE))
        raise CaptionModelError(
            f"caption model {model!r} has model_type {model_type!r}, which kvid cannot caption with; "
            f"supported model types: {supported} (e.g. {FAMILIES['qwen2_5_vl'].example}, "
            f"{FAMILIES['llava_onevision'].example})"
        )
    return spec


# --------------------------------------------------------------------------- offline / availability

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


# --------------------------------------------------------------------------- backends


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
