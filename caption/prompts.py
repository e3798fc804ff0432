"""Caption prompt templates: named ones, custom ones from config, and their hash.

A template is the user's instruction to the VLM (the family's chat template and the
video placeholder tokens are added by the backend). Custom templates may use the
placeholders ``{num_frames}`` (frames the model sees) and ``{duration_s}`` (clip length
in seconds); anything else in braces is an error at start, not at the first clip.
``prompt_hash`` (short sha256 of the template text) goes into ``caption_prompt_hash`` so
captions made with different prompts can be told apart.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field

PLACEHOLDERS = ("num_frames", "duration_s")

# The default follows the detailed-description prompt Kandinsky Video 1.1 used with
# LLaVA: what is there, what happens, where, how it looks, how the camera moves; one
# paragraph of plain prose that starts with the subject.
DETAILED = (
    "Describe this video in detail as one paragraph of plain prose. "
    "Say who or what the main subjects are and what they look like, what they do and how they move, "
    "and the setting and background. "
    "Describe the visual style: whether it is real footage, animation or computer graphics, the lighting, "
    "and the main colours. "
    "Describe the camera motion: static, panning, tilting, zooming in or out, tracking a subject, or handheld. "
    "Describe only what is visible. Do not use lists or headings, and start directly with the subject "
    "instead of an opening such as 'The video shows'."
)

SHORT = (
    "Describe this video in one sentence of at most 30 words: the main subject, what it does, and where. "
    "Start directly with the subject."
)

CAMERA = (
    "Describe this video in two or three sentences. First say how the camera moves (static, pan left or right, "
    "tilt up or down, zoom in or out, dolly, tracking a subject, or handheld), then describe the subjects, "
    "their actions and the setting. Start directly with the camera or the subject, not with 'The video'."
)

TEMPLATES: dict[str, str] = {"detailed": DETAILED, "short": SHORT, "camera": CAMERA}
DEFAULT_TEMPLATE = "detailed"


class PromptError(ValueError):
    """A prompt template is unusable (unknown name, bad placeholder, empty)."""


def prompt_hash(template_text: str) -> str:
    """Short (16 hex) sha256 of the template text, as stored in ``caption_prompt_hash``."""
    return hashlib.sha256(template_text.strip().encode("utf-8")).hexdigest()[:16]


def format_duration(duration_s: float) -> str:
    """Seconds as a prompt shows them: at most two decimals, no trailing zeros ("3", "2.5")."""
    return f"{round(float(duration_s), 2):g}"


def validate_template(text: str) -> tuple[str, ...]:
    """Check a template; return the placeholders it uses. Raises PromptError."""
    if not isinstance(text, str) or not text.strip():
        raise PromptError("caption prompt template is empty")
    used = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise PromptError(
            f"caption prompt template has unbalanced braces ({e}); write a literal brace as '{{{{' or '}}}}'"
        ) from e
    for _, field_name, format_spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in PLACEHOLDERS:
            raise PromptError(
                f"caption prompt template uses unknown placeholder {{{field_name}}}; "
                f"allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            )
        if format_spec or conversion:
            raise PromptError(f"caption prompt placeholder {{{field_name}}} takes no format spec or conversion")
        used.append(field_name)
    return tuple(dict.fromkeys(used))


@dataclass(frozen=True)
class PromptTemplate:
    """A validated template: ``render`` fills the placeholders for one clip."""

    text: str
    name: str = "custom"
    placeholders: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "placeholders", validate_template(self.text))

    @property
    def hash(self) -> str:
        return prompt_hash(self.text)

    def render(self, num_frames: int | None = None, duration_s: float | None = None) -> str:
        values = {}
        for p in self.placeholders:
            if p == "num_frames":
                if num_frames is None:
                    raise PromptError("template needs {num_frames} but the clip has no frame count")
                values[p] = str(int(num_frames))
            elif p == "duration_s":
                if duration_s is None:
                    raise PromptError("template needs {duration_s} but the clip has no duration")
                values[p] = format_duration(duration_s)
        return self.text.format(**values)


def get_template(name_or_text: str | PromptTemplate | None = None) -> PromptTemplate:
    """A named template ("detailed", "short", "camera") or a custom template string.

    A single word that is not a known name is an error (a typo, not a prompt); anything
    with whitespace is taken as custom template text.
    """
    if isinstance(name_or_text, PromptTemplate):
        return name_or_text
    if name_or_text is None:
        name_or_text = DEFAULT_TEMPLATE
    if not isinstance(name_or_text, str):
        raise PromptError(f"caption prompt must be a template name or text, got {type(name_or_text).__name__}")
    key = name_or_text.strip()
    if key in TEMPLATES:
        return PromptTemplate(TEMPLATES[key], name=key)
    if not key or not any(ch.isspace() for ch in key):
        raise PromptError(
            f"unknown caption prompt template {name_or_text!r}; use one of {sorted(TEMPLATES)} "
            "or give the full prompt text"
        )
    return PromptTemplate(name_or_text, name="custom")
