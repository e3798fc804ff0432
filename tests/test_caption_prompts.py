"""Prompt templates: named ones, custom ones with placeholders, validation, hash."""

from __future__ import annotations

import re

import pytest

from caption.prompts import (
    DEFAULT_TEMPLATE,
    TEMPLATES,
    PromptError,
    PromptTemplate,
    format_duration,
    get_template,
    prompt_hash,
    validate_template,
)


def test_named_templates():
    assert set(TEMPLATES) >= {"detailed", "short", "camera"}
    assert DEFAULT_TEMPLATE == "detailed"
    assert get_template().text == TEMPLATES["detailed"]
    assert get_template(None).name == "detailed"
    for name in TEMPLATES:
        t = get_template(name)
        assert t.name == name and t.render() == TEMPLATES[name]


def test_default_prompt_covers_what_kandinsky_asked_for():
    text = TEMPLATES["detailed"].lower()
    for must in ("subject", "setting", "style", "animation", "lighting", "colour", "camera", "static", "pan",
                 "zoom", "tracking", "one paragraph"):
        assert must in text, must
    assert "the video shows" in text  # told not to start with it


def test_custom_template_renders_placeholders():
    t = get_template("These are {num_frames} frames from a {duration_s}-second clip. Describe it.")
    assert t.name == "custom"
    assert t.placeholders == ("num_frames", "duration_s")
    assert t.render(num_frames=8, duration_s=2.5) == "These are 8 frames from a 2.5-second clip. Describe it."
    assert t.render(num_frames=16, duration_s=3.0) == "These are 16 frames from a 3-second clip. Describe it."


def test_literal_braces():
    t = get_template("Answer as JSON like {{\"caption\": ...}} for {num_frames} frames.")
    assert t.render(num_frames=4) == 'Answer as JSON like {"caption": ...} for 4 frames.'
    assert get_template("No placeholders {{here}} at all.").render() == "No placeholders {here} at all."


@pytest.mark.parametrize(
    "text,match",
    [
        ("Describe the {subject} of the video.", "unknown placeholder {subject}"),
        ("Describe {num_frames:03d} frames.", "no format spec"),
        ("Describe {num_frames!r} frames.", "no format spec"),
        ("Describe { the video.", "unbalanced braces"),
        ("Describe } the video.", "unbalanced braces"),
        ("   ", "empty"),
    ],
)
def test_bad_templates_fail_at_start(text, match):
    with pytest.raises(PromptError, match=re.escape(match)):
        validate_template(text)
    with pytest.raises(PromptError):
        PromptTemplate(text)


def test_unknown_name_is_a_typo_not_a_prompt():
    with pytest.raises(PromptError, match="unknown caption prompt template 'detailled'"):
        get_template("detailled")


def test_missing_value_for_placeholder():
    with pytest.raises(PromptError, match="duration"):
        get_template("Describe this {duration_s} s clip.").render(num_frames=8)


def test_prompt_hash():
    h = prompt_hash(TEMPLATES["detailed"])
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert h == prompt_hash(TEMPLATES["detailed"])  # stable
    assert h == get_template("detailed").hash
    assert h != prompt_hash(TEMPLATES["short"])
    assert prompt_hash("Describe it.") == prompt_hash("  Describe it.\n")  # surrounding whitespace ignored
    assert prompt_hash("Describe it.") != prompt_hash("Describe it!")
    # the hash is of the template, not of one rendering
    t = get_template("Describe these {num_frames} frames.")
    assert t.hash == prompt_hash("Describe these {num_frames} frames.")


@pytest.mark.parametrize("value,text", [(3.0, "3"), (2.5, "2.5"), (1.25, "1.25"), (2.0416666, "2.04"), (10, "10")])
def test_format_duration(value, text):
    assert format_duration(value) == text
