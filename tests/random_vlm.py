"""Random-weight caption models built in code: tests (tiny) and the GPU bench (full size),
which puts tests/ on its path for this module.

Nothing here downloads. A model is a transformers config written in code, a byte-level
tokenizer built from an in-memory vocabulary (every byte is a token, so any prompt
encodes; the family's special tokens are added on top), and the family's own image and
video processors constructed from kwargs. ``save_random_model`` writes the three with
``save_pretrained`` so that ``load_backend(path)`` exercises the real loading code.

``size="full"`` writes the dimensions of a released 7B-class checkpoint (Qwen2.5-VL-7B,
LLaVA-NeXT-Video-7B, ...) so a GPU bench with random weights and a fixed number of new
tokens measures honest speed; ``size="tiny"`` is a few hundred thousand parameters for CPU
tests. The tokenizer is not the real one: prompts encode at about one token per byte, a
little longer than a real BPE vocabulary would make them (the bench prints the counts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Families that have a random builder (the names match caption.families.FAMILIES).
SYNTHETIC_FAMILIES = ("qwen2_5_vl", "qwen2_vl", "llava_next_video", "llava_onevision", "smolvlm")
SIZES = ("tiny", "full")


@dataclass(frozen=True)
class _Specials:
    bos: str | None
    eos: str
    pad: str
    unk: str | None
    extra: tuple[str, ...]  # other special tokens, in id order after the byte vocabulary


_QWEN_SPECIALS = _Specials(
    bos=None,
    eos="<|im_end|>",
    pad="<|endoftext|>",
    unk=None,
    extra=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"),
)
_LLAMA_SPECIALS = _Specials(
    bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", extra=("<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>")
)
_ONEVISION_SPECIALS = _Specials(
    bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk=None,
    extra=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"),
)
_SMOLVLM_SPECIALS = _Specials(
    bos="<|im_start|>", eos="<end_of_utterance>", pad="<|endoftext|>", unk=None,
    extra=("<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>",
           "<image>", "<video>") + tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
)

_SPECIALS = {
    "qwen2_5_vl": _QWEN_SPECIALS,
    "qwen2_vl": _QWEN_SPECIALS,
    "llava_next_video": _LLAMA_SPECIALS,
    "llava_onevision": _ONEVISION_SPECIALS,
    "smolvlm": _SMOLVLM_SPECIALS,
}


def build_tokenizer(family: str):
    """A byte-level BPE tokenizer (no merges) with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    sp = _SPECIALS[family]
    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(sp.extra))
    if sp.bos is not None and family == "llava_next_video":
        bos_id = tok.token_to_id(sp.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{sp.bos} $A", pair=f"{sp.bos} $A {sp.bos} $B", special_tokens=[(sp.bos, bos_id)]
        )
    kwargs = {"eos_token": sp.eos, "pad_token": sp.pad}
    if sp.bos is not None:
        kwargs["bos_token"] = sp.bos
    if sp.unk is not None:
        kwargs["unk_token"] = sp.unk
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    fast.padding_side = "left"
    return fast


def _ids(tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _llava_token_indices(tokenizer) -> dict[str, int]:
    """The LLaVA families' placeholder token ids, as their configs name them."""
    image_id, video_id = _ids(tokenizer, "<image>", "<video>")
    return {"image_token_index": image_id, "video_token_index": video_id}


def _vocab_size(tokenizer, size: str, full_vocab: int) -> int:
    # Full size keeps the released vocabulary (the LM head is a real cost); ids the
    # byte tokenizer does not know decode to nothing.
    return full_vocab if size == "full" else len(tokenizer)


def _lm(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int) -> dict:
    return dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads)


def _vit(hidden: int, intermediate: int, layers: int, heads: int, image_size: int) -> dict:
    return dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, image_size=image_size)


# Language-model dimensions: "full" those of the released checkpoint, "tiny" a CPU test model.
_TEXT_DIMS = {
    "qwen2_vl": {"full": _lm(3584, 18944, 28, 28, 4), "tiny": _lm(64, 128, 2, 4, 2)},  # Qwen2-7B
    "llava_next_video": {"full": _lm(4096, 11008, 32, 32, 32), "tiny": _lm(64, 128, 2, 4, 4)},  # Vicuna-7B
    # the 7B OneVision (Qwen2-7B LM); the 0.5B one is the small model
    "llava_onevision": {"full": _lm(3584, 18944, 28, 28, 4), "tiny": _lm(64, 128, 2, 4, 2)},
    "smolvlm": {"full": _lm(2048, 8192, 24, 32, 32), "tiny": _lm(64, 128, 2, 4, 4)},  # SmolVLM2-2.2B
}
_TEXT_DIMS["qwen2_5_vl"] = _TEXT_DIMS["qwen2_vl"]  # Qwen2.5-VL-7B: the same LM shape

# Vision towers that use the CLIP-style field names (Qwen's own ViTs are written in build_config).
_VISION_DIMS = {
    "llava_next_video": {"full": _vit(1024, 4096, 24, 16, 336), "tiny": _vit(32, 64, 2, 2, 56)},  # CLIP ViT-L/14-336
    "llava_onevision": {"full": _vit(1152, 4304, 26, 16, 384), "tiny": _vit(32, 64, 2, 2, 28)},  # SigLIP so400m
    "smolvlm": {"full": _vit(1152, 4304, 27, 16, 384), "tiny": _vit(32, 64, 2, 2, 32)},  # SigLIP so400m
}


def _text_config(family: str, tokenizer, size: str, full_vocab: int, max_position_embeddings: int, **family_fields):
    """The language-model config: vocabulary, the sized dimensions, the tokenizer's special ids,
    plus (or overriding) the family's own fields."""
    text = dict(
        vocab_size=_vocab_size(tokenizer, size, full_vocab),
        **_TEXT_DIMS[family][size],
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text.update(family_fields)
    return text


def build_config(family: str, tokenizer, size: str = "tiny"):
    """The model config for ``family`` at ``size`` ("tiny" or "full")."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    full = size == "full"
    if family in ("qwen2_5_vl", "qwen2_vl"):
        vstart, vend, image_pad, video_pad = _ids(
            tokenizer, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
        )
        text = _text_config(
            family, tokenizer, size, full_vocab=152064, max_position_embeddings=32768 if full else 8192,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                             "mrope_section": [16, 24, 24] if full else [4, 2, 2]},
            bos_token_id=tokenizer.pad_token_id,  # no BOS token: <|endoftext|>, as in the released configs
        )
        if family == "qwen2_5_vl":
            from transformers import Qwen2_5_VLConfig as Config

            vision = dict(
                depth=32 if full else 2,
                hidden_size=1280 if full else 32,
                intermediate_size=3420 if full else 64,
                num_heads=16 if full else 2,
                out_hidden_size=text["hidden_size"],
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
                window_size=112,
                fullatt_block_indexes=[7, 15, 23, 31] if full else [1],
                tokens_per_second=2,
            )
        else:
            from transformers import Qwen2VLConfig as Config

            vision = dict(
                depth=32 if full else 2,
                embed_dim=1280 if full else 32,
                hidden_size=text["hidden_size"],
                mlp_ratio=4,
                num_heads=16 if full else 2,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
            )
        return Config(
            text_config=text,
            vision_config=vision,
            image_token_id=image_pad,
            video_token_id=video_pad,
            vision_start_token_id=vstart,
            vision_end_token_id=vend,
            tie_word_embeddings=False,
        )
    if family == "llava_next_video":
        from transformers import LlavaNextVideoConfig

        text = _text_config(
            family, tokenizer, size, full_vocab=32064, max_position_embeddings=4096, model_type="llama"
        )
        vision = dict(
            model_type="clip_vision_model", **_VISION_DIMS[family][size], patch_size=14,
            projection_dim=768 if full else 32,
        )
        return LlavaNextVideoConfig(
            text_config=text,
            vision_config=vision,
            **_llava_token_indices(tokenizer),
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
            image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]] if full
            else [[56, 112], [112, 56], [112, 112]],
            spatial_pool_stride=2,
            spatial_pool_mode="average",
            image_seq_length=576 if full else 16,
            video_seq_length=288 if full else 8,
        )
    if family == "llava_onevision":
        from transformers import LlavaOnevisionConfig

        text = _text_config(
            family, tokenizer, size, full_vocab=152128, max_position_embeddings=32768, model_type="qwen2",
            bos_token_id=tokenizer.pad_token_id,  # a Qwen2 LM: no BOS token, <|endoftext|> as for Qwen2-VL
        )
        vision = dict(
            model_type="siglip_vision_model", **_VISION_DIMS[family][size], patch_size=14, vision_use_head=False
        )
        return LlavaOnevisionConfig(
            text_config=text,
            vision_config=vision,
            **_llava_token_indices(tokenizer),
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            image_grid_pinpoints=None if full else [[28, 28], [28, 56], [56, 28], [56, 56]],
        )
    if family == "smolvlm":
        from transformers import SmolVLMConfig

        image_id = tokenizer.convert_tokens_to_ids("<image>")
        text = _text_config(
            family, tokenizer, size, full_vocab=49280, max_position_embeddings=16384, model_type="llama",
            rope_parameters={"rope_type": "default", "rope_theta": 273768.0},
        )
        vision = dict(**_VISION_DIMS[family][size], patch_size=14 if full else 8)
        return SmolVLMConfig(
            text_config=text, vision_config=vision, image_token_id=image_id, scale_factor=3 if full else 2
        )
    raise ValueError(f"no random builder for family {family!r}; choose one of {SYNTHETIC_FAMILIES}")


def build_processor(family: str, tokenizer, config, size: str = "tiny"):
    """The family's processor (image + video processors from kwargs, our chat template)."""
    from caption.families import FAMILIES

    template = FAMILIES[family].chat_template
    full = size == "full"
    if family in ("qwen2_5_vl", "qwen2_vl"):
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        cls = "Qwen2_5_VLProcessor" if family == "qwen2_5_vl" else "Qwen2VLProcessor"
        import transformers

        # Real Qwen video defaults are 128*28*28 .. 768*28*28 pixels a frame; tiny caps
        # frames near 56x84 so a clip is a few dozen tokens.
        min_px, max_px = (128 * 28 * 28, 768 * 28 * 28) if full else (28 * 28, 56 * 84)
        image_processor = Qwen2VLImageProcessor(min_pixels=min_px, max_pixels=max_px)
        video_processor = Qwen2VLVideoProcessor(min_pixels=min_px, max_pixels=max_px, cap_pixels_per_frame=True)
        return getattr(transformers, cls)(
            image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor, chat_template=template
        )
    if family == "llava_next_video":
        from transformers import LlavaNextImageProcessor, LlavaNextVideoProcessor, LlavaNextVideoVideoProcessor

        side = config.vision_config.image_size
        image_processor = LlavaNextImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side},
            image_grid_pinpoints=config.image_grid_pinpoints,
        )
        video_processor = LlavaNextVideoVideoProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        )
        return LlavaNextVideoProcessor(
            video_processor=video_processor, image_processor=image_processor, tokenizer=tokenizer,
            chat_template=template, patch_size=config.vision_config.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            video_token="<video>", image_token="<image>", num_additional_image_tokens=1,
        )
    if family == "llava_onevision":
        from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

        side = config.vision_config.image_size
        image_processor = LlavaOnevisionImageProcessor(
            size={"height": side, "width": side}, image_grid_pinpoints=config.image_grid_pinpoints
        )
        video_processor = LlavaOnevisionVideoProcessor(size={"height": side, "width": side})
        return LlavaOnevisionProcessor(
            image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
            num_image_tokens=(side // config.vision_config.patch_size) ** 2,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            chat_template=template,
        )
    if family == "smolvlm":
        from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

        side = config.vision_config.image_size
        image_processor = SmolVLMImageProcessor(
            size={"longest_edge": side * (4 if full else 1)}, max_image_size={"longest_edge": side}
        )
        video_processor = SmolVLMVideoProcessor(
            size={"longest_edge": side}, max_image_size={"longest_edge": side}
        )
        seq = int((side // config.vision_config.patch_size) ** 2 / (config.scale_factor**2))
        return SmolVLMProcessor(
            image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
            image_seq_len=seq, chat_template=template,
        )
    raise ValueError(f"no random builder for family {family!r}")


def build_random_model(family: str, size: str = "tiny", *, device=None, dtype=None, seed: int = 0,
                       attn_implementation: str = "sdpa"):
    """(model, processor) with random weights, in eval mode, built directly on ``device`` in ``dtype``."""
    import torch
    import transformers

    from caption.families import FAMILIES

    tokenizer = build_tokenizer(family)
    config = build_config(family, tokenizer, size)
    processor = build_processor(family, tokenizer, config, size)
    cls = getattr(transformers, FAMILIES[family].model_class)
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = cls._from_config(config, dtype=dtype or torch.float32, attn_implementation=attn_implementation)
    model.eval()
    gen = model.generation_config
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.do_sample = False
    return model, processor


def save_random_model(family: str, path: str | os.PathLike, size: str = "tiny", *, seed: int = 0,
                      weights: bool = True) -> str:
    """Write a random ``family`` model (config, weights, tokenizer, processor) to ``path``.

    ``weights=False`` writes everything but the weights (for vLLM's ``load_format="dummy"``).
    """
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    if weights:
        model, processor = build_random_model(family, size, seed=seed)
        model.save_pretrained(path)
    else:
        tokenizer = build_tokenizer(family)
        config = build_config(family, tokenizer, size)
        processor = build_processor(family, tokenizer, config, size)
        config.save_pretrained(path)
    processor.save_pretrained(path)
    return path
