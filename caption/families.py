"""The VLM families kvid captions with: for each, the model types it covers, the chat template
and video placeholder its processor expects, and what its inputs need.

Qwen2.5-VL and Qwen2-VL (video input with time-aware position ids), LLaVA-NeXT-Video,
LLaVA-OneVision (0.5B runs on modest GPUs) and SmolVLM2 (needs the ``num2words`` package for
its processor). A checkpoint's own chat template wins when it ships one.
"""

from __future__ import annotations

from dataclasses import dataclass

from caption.errors import CaptionModelError

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
