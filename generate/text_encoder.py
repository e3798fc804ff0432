"""Text encoder: a T5-family encoder (Flan-UL2 for the released model) plus a learned projection.

Official behaviour reproduced (``kandinsky_video/condition_encoders.py`` / ``condition_processors.py``):

* tokenize to at most ``tokens_length`` (128) tokens (the tokenizer appends ``</s>``), pad to 128;
* ``last_hidden_state`` of the encoder -> ``projection = Sequential(Linear(d_model, context_dim,
  bias=False), LayerNorm(context_dim))`` (``projection_base`` of ``t5_projections.pt``; the
  ``projection_interpolation`` entry is never used by the released pipeline);
* padded positions are zeroed and the sequence is cut to the longest valid length + 1.

Any encoder whose forward returns ``last_hidden_state`` works (``T5EncoderModel`` of any size):
keep the text encoder swappable and offloadable, users asked for smaller ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import MissingWeightsError, load_checked, load_state_file
from .dict_config import DictConfig

DEFAULT_TEXT_ENCODER = "google/flan-ul2"


@dataclass
class TextEncoderConfig(DictConfig):
    pretrained: str = DEFAULT_TEXT_ENCODER  # hub id or local folder of a T5 encoder + tokenizer
    tokens_length: int = 128
    context_dim: int = 4096


def make_projection(d_model: int, context_dim: int) -> nn.Sequential:
    """``Sequential(Linear(d_model, context_dim, bias=False), LayerNorm(context_dim))``: keys 0.weight, 1.weight, 1.bias."""
    return nn.Sequential(nn.Linear(d_model, context_dim, bias=False), nn.LayerNorm(context_dim))


@dataclass
class PromptEmbeds:
    """Encoded prompts: context (B, L, D) with padded positions zeroed, mask (B, L) bool."""

    context: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> PromptEmbeds:
        return PromptEmbeds(self.context.to(device=device, dtype=dtype), self.mask.to(device=device))

    def __getitem__(self, i) -> PromptEmbeds:
        sl = slice(i, i + 1) if isinstance(i, int) else i
        return PromptEmbeds(self.context[sl], self.mask[sl])


class KandinskyTextEncoder(nn.Module):
    """Tokenizer + T5 encoder + projection. ``encode(prompts)`` -> :class:`PromptEmbeds`."""

    def __init__(self, encoder: nn.Module, tokenizer: Any, config: TextEncoderConfig, d_model: int | None = None):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.tokenizer = tokenizer
        d_model = d_model or getattr(getattr(encoder, "config", None), "d_model", None)
        if d_model is None:
            raise ValueError("cannot infer d_model of the text encoder; pass d_model=")
        self.projection = make_projection(d_model, config.context_dim)

    @property
    def device(self) -> torch.device:
        return self.projection[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.projection[0].weight.dtype

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str | os.PathLike = DEFAULT_TEXT_ENCODER,
        projections: str | os.PathLike | dict | None = None,
        *,
        tokens_length: int = 128,
        context_dim: int = 4096,
        dtype: torch.dtype = torch.float32,
        local_files_only: bool | None = None,
    ) -> KandinskyTextEncoder:
        """Load a T5 encoder and its tokenizer with transformers, and the projection.

        ``pretrained``: hub id (e.g. ``google/flan-ul2``) or a local folder with ``config.json``,
        the weights and the tokenizer files. ``projections``: official ``t5_projections.pt``
        (or its safetensors conversion), a folder holding ``projection.safetensors`` (our
        format), or a state dict; None looks for ``projection.safetensors`` in ``pretrained``.
        """
        from transformers import AutoTokenizer, T5EncoderModel

        if local_files_only is None:
            local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        src = str(pretrained)
        looks_local = src.startswith((os.path.sep, ".", "~")) or Path(src).exists()
        if looks_local:
            src = str(Path(src).expanduser())
            if not Path(src).is_dir():
                raise MissingWeightsError(
                    f"text encoder folder {src} does not exist. Point `text_encoder` at a local T5 encoder folder "
                    f"(config.json, model*.safetensors, tokenizer files) or at a hub id such as {DEFAULT_TEXT_ENCODER}"
                )
        try:
            tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=local_files_only)
            encoder = T5EncoderModel.from_pretrained(src, dtype=dtype, local_files_only=local_files_only)
        except (OSError, ValueError) as e:
            raise MissingWeightsError(
                f"could not load the text encoder {src!r} ({type(e).__name__}: {str(e).splitlines()[0]}). "
                f"Expected a transformers T5 encoder with its tokenizer: a local folder (config.json, "
                f"model*.safetensors or pytorch_model*.bin, spiece.model or tokenizer.json) or a hub id "
                f"({DEFAULT_TEXT_ENCODER} for the released model; downloading needs internet and HF_HUB_OFFLINE unset)."
            ) from e
        config = TextEncoderConfig(pretrained=src, tokens_length=tokens_length, context_dim=context_dim)
        module = cls(encoder, tokenizer, config)
        state = _load_projection_state(projections, src)

        load_checked(module.projection, state, component="text projection")
        return module.to(dtype)

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(
            list(prompts), max_length=self.config.tokens_length, truncation=True, padding="max_length",
            return_tensors="pt",
        )
        return enc["input_ids"], enc["attention_mask"]

    @torch.no_grad()
    def encode(self, prompts: Sequence[str] | str) -> PromptEmbeds:
        if isinstance(prompts, str):
            prompts = [prompts]
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        context = self.projection(hidden.to(self.dtype))
        context = context * mask[..., None].to(context.dtype)
        length = min(int(mask.sum(-1).max()) + 1, mask.shape[1])
        return PromptEmbeds(context[:, :length].float(), mask[:, :length].bool())


def _load_projection_state(projections: Any, pretrained: str) -> dict[str, torch.Tensor]:

    if isinstance(projections, dict):
        state = projections
    else:
        path = Path(projections) if projections is not None else Path(pretrained)
        if path.is_dir():
            path = path / "projection.safetensors"
        if not path.is_file():
            raise MissingWeightsError(
                f"text projection weights not found at {path}. Expected the official t5_projections.pt "
                "(or t5_projections.safetensors) from ai-forever/KandinskyVideo_1_1, or projection.safetensors "
                "written by KandinskyVideoPipeline.save_pretrained"
            )
        state = load_state_file(path)
    if "projection_base" in state:  # official t5_projections.pt: {'projection_base': sd, 'projection_interpolation': sd}
        state = state["projection_base"]
    elif any(k.startswith("projection_base.") for k in state):  # its flat safetensors conversion
        state = {k[len("projection_base."):]: v for k, v in state.items() if k.startswith("projection_base.")}
    return dict(state)


def tiny_tokenizer(words: Sequence[str] | None = None, model_max_length: int = 128):
    """A word-level fast tokenizer built in memory (no hub): for tests and random-weight benchmarks.

    Appends ``</s>`` like the T5 tokenizer; unknown words map to ``<unk>``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = list(words) if words is not None else [
        "a", "an", "the", "cat", "dog", "car", "red", "blue", "green", "running", "on", "in", "beach", "city",
        "at", "night", "sunset", "forest", "river", "flying", "bird", "over", "mountains", "snow", "walking",
        "street", "rain", "ocean", "waves", "camera", "moving", "slowly", "fast", "portrait", "of", "woman", "man",
    ]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=model_max_length
    )


def tiny_t5_encoder(d_model: int = 32, vocab_size: int = 64, num_layers: int = 2, seed: int = 0):
    """A random tiny ``T5EncoderModel`` built in code (no hub access)."""
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=num_layers, num_heads=4,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return T5EncoderModel(cfg).eval()


def flan_ul2_encoder_config():
    """``T5Config`` with the shape of the Flan-UL2 encoder (8.6B parameters): for random-weight benchmarks."""
    from transformers import T5Config

    return T5Config(
        vocab_size=32128, d_model=4096, d_kv=256, d_ff=16384, num_layers=32, num_heads=16,
        feed_forward_proj="gated-silu", relative_attention_num_buckets=32, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, tie_word_embeddings=False,
    )
