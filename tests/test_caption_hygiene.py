"""Caption hygiene rules, table-driven: boilerplate, markdown, cuts, degenerate outputs."""

from __future__ import annotations

import pytest

from caption.hygiene import (
    EMPTY,
    GARBAGE,
    REFUSAL,
    REPETITIVE,
    TOO_SHORT,
    clean_caption,
    split_sentences,
)

# raw model output -> expected clean caption
CLEAN = [
    ("The video shows a man walking a dog along a sunny beach at sunset.",
     "A man walking a dog along a sunny beach at sunset."),
    ("the video depicts two horses grazing in a green meadow under a cloudy sky.",
     "Two horses grazing in a green meadow under a cloudy sky."),
    ("This video depicts a chef slicing tomatoes on a wooden board.",
     "A chef slicing tomatoes on a wooden board."),
    ("In this video, we see a red car driving through a snowy forest road.",
     "A red car driving through a snowy forest road."),
    ("In the video, a child blows out candles on a birthday cake.",
     "A child blows out candles on a birthday cake."),
    ("The clip features a busy street market with people buying fruit.",
     "A busy street market with people buying fruit."),
    ("THE IMAGE SHOWS a lighthouse on a rocky coast at dusk.",
     "A lighthouse on a rocky coast at dusk."),
    ("This short clip depicts that two children play football in a park.",
     "Two children play football in a park."),
    ("The footage begins with a wide shot of a desert road at noon.",
     "A wide shot of a desert road at noon."),
    ("The video is a close-up of a flower swaying in the wind in a garden.",
     "A close-up of a flower swaying in the wind in a garden."),
    ("Sure! Here is a detailed description of the video: A cat sleeps on a sofa near a window.",
     "A cat sleeps on a sofa near a window."),
    ("Here's a caption: The video features a chef chopping onions in a busy kitchen.",
     "A chef chopping onions in a busy kitchen."),
    ("We see a skier racing down a steep slope, the camera tracking from behind.",
     "A skier racing down a steep slope, the camera tracking from behind."),
    # markdown, labels, bullets, quotes, whitespace
    ("**Caption:** A woman *slowly* pours coffee into a white cup on a wooden table.",
     "A woman slowly pours coffee into a white cup on a wooden table."),
    ("- A boy rides a bicycle down a hill.\n- The camera tracks him from the side.",
     "A boy rides a bicycle down a hill. The camera tracks him from the side."),
    ("## Description\nA sailboat crosses a calm bay while gulls circle overhead.",
     "A sailboat crosses a calm bay while gulls circle overhead."),
    ('"A drone shot over a city skyline at night, with lights twinkling."',
     "A drone shot over a city skyline at night, with lights twinkling."),
    ("\u201cAn old train crosses a stone bridge in the mountains.\u201d",
     "An old train crosses a stone bridge in the mountains."),
    ("  A   fox\t trots across\n\n a frozen   lake at dawn.  ",
     "A fox trots across a frozen lake at dawn."),
    ("Description: an animated rabbit hops through a colourful cartoon forest.",
     "An animated rabbit hops through a colourful cartoon forest."),
    # content that merely starts like boilerplate is kept
    ("The scene is set in a forest with tall pine trees and morning fog drifting between them.",
     "The scene is set in a forest with tall pine trees and morning fog drifting between them."),
    ("A slow motion shot shows a hummingbird hovering near a red flower.",
     "A slow motion shot shows a hummingbird hovering near a red flower."),
    ("Video game footage of a car racing on a neon-lit track.",
     "Video game footage of a car racing on a neon-lit track."),
    # abbreviations are not sentence ends
    ("A realistic shot, e.g. documentary style, of a fox at dawn. The camera is static.",
     "A realistic shot, e.g. documentary style, of a fox at dawn. The camera is static."),
    # a trailing unfinished sentence (max_new_tokens hit) is dropped
    ("A dog runs across a field chasing a ball. The camera pans left to follow it and then",
     "A dog runs across a field chasing a ball."),
    # ... unless it is all there is
    ("A dog runs across a wide green field chasing a red ball",
     "A dog runs across a wide green field chasing a red ball"),
    # non-English text is text
    ("Ein Hund läuft über eine grüne Wiese und jagt einem Ball hinterher.",
     "Ein Hund läuft über eine grüne Wiese und jagt einem Ball hinterher."),
]

# raw model output -> expected reject reason
DEGENERATE = [
    ("", EMPTY),
    ("   \n\t ", EMPTY),
    (None, EMPTY),
    ("The video shows", EMPTY),
    ("A cat.", TOO_SHORT),
    ("The video shows a dog.", TOO_SHORT),
    ("I'm sorry, but I cannot describe this video.", REFUSAL),
    ("I am unable to view videos, but I can help with something else.", REFUSAL),
    ("Sorry, I can't help with that request about the clip.", REFUSAL),
    ("As an AI language model, I do not have the ability to watch videos.", REFUSAL),
    ("A man walks. A man walks. A man walks. A man walks.", REPETITIVE),
    ("A dog runs in the park and the dog runs in the park and the dog runs in the park and the dog runs",
     REPETITIVE),
    ("A lake with very very very very tall mountains behind it.", REPETITIVE),
    ("The sky is blue. Birds fly over the hill. The sky is blue. Birds fly over the hill.", REPETITIVE),
    ("the the the the the the the the the the the the the the the the the the", REPETITIVE),
    ("a b a b a b a b a b a b a b a b a b a b", REPETITIVE),
    ("%%%% 1234 ### @@@@ !!! ???? 5678 ====", GARBAGE),
    ("rf\ufffd\ufffdIY\ufffdf\ufffd\ufffdIY", GARBAGE),
    ("\x1d\x07\x00 \x1b ;; )) 0x7f 0x00 12 34", GARBAGE),
    ("qwertyuiopasdfghjklzxcvbnmqwertyuiopasdfghjklzxcvbnm runs across the field.", GARBAGE),
    ("<|im_start|> <|video_pad|> {} [] () <> 12 3.4 5,6 %% && ||", GARBAGE),
]


@pytest.mark.parametrize("raw,expected", CLEAN, ids=[c[0][:40] for c in CLEAN])
def test_clean_caption(raw, expected):
    result = clean_caption(raw)
    assert result.ok, result
    assert result.reason is None
    assert result.caption == expected


@pytest.mark.parametrize("raw,reason", DEGENERATE, ids=[str(c[0])[:40] for c in DEGENERATE])
def test_degenerate_outputs_are_flagged(raw, reason):
    result = clean_caption(raw)
    assert result.caption is None
    assert not result.ok
    assert result.reason == reason, result
    assert result.detail  # a readable why for error_message


# (raw, max_chars, expected)
CUTS = [
    # under the cap: unchanged
    ("A dog runs on a beach. The sun sets behind it.", 100, "A dog runs on a beach. The sun sets behind it."),
    # cut at the last sentence end under the cap
    ("A dog runs on a beach. The sun sets behind it. Waves roll onto the sand.", 50,
     "A dog runs on a beach. The sun sets behind it."),
    ("A dog runs on a beach. The sun sets behind it. Waves roll onto the sand.", 46,
     "A dog runs on a beach. The sun sets behind it."),
    ("A dog runs on a beach. The sun sets behind it. Waves roll onto the sand.", 45,
     "A dog runs on a beach."),
    ("Is it a dog? Yes, a brown dog runs on a beach! Waves roll onto the sand.", 50,
     "Is it a dog? Yes, a brown dog runs on a beach!"),
    # no sentence end under the cap: hard cut at a word boundary, no dangling comma
    ("A very long sentence about a brown dog, running along the beach, chasing seagulls and waves.", 40,
     "A very long sentence about a brown dog"),
    ("A very long sentence about a brown dog running along the beach chasing seagulls.", 30,
     "A very long sentence about a"),
    # a first sentence too short to keep alone (< a quarter of the cap): word cut instead
    ("A dog. It runs along a very long beach with many people and umbrellas and kites.", 60,
     "A dog. It runs along a very long beach with many people and"),
]


@pytest.mark.parametrize("raw,max_chars,expected", CUTS)
def test_length_cap(raw, max_chars, expected):
    result = clean_caption(raw, max_chars=max_chars)
    assert result.caption == expected
    assert len(result.caption) <= max_chars


@pytest.mark.parametrize("raw", [c[0] for c in CLEAN])
def test_clean_is_idempotent(raw):
    once = clean_caption(raw).caption
    assert clean_caption(once).caption == once


def test_loop_hidden_by_the_cap_is_still_rejected():
    # Two good sentences then a generation loop: the cap alone would hide the loop.
    raw = "A cat sits on a mat. It looks around. " + "The cat is sitting on the mat and " * 8
    assert clean_caption(raw, max_chars=40).reason == REPETITIVE


def test_long_natural_caption_is_not_repetitive():
    raw = (
        "A young woman in a yellow raincoat walks her small white dog along a wet city street at night. "
        "Neon signs from the shops reflect in the puddles, and cars pass slowly in the background. "
        "The footage is realistic, with warm street lights and deep blue shadows. "
        "The camera tracks the woman from the side at walking pace, then slowly pans to follow the dog "
        "as it stops to sniff a lamppost near the corner of the street."
    )
    result = clean_caption(raw, max_chars=1000)
    assert result.ok and result.caption == raw


def test_min_words_is_configurable():
    assert clean_caption("A red kite flies.", min_words=3).ok
    assert clean_caption("A red kite flies.", min_words=5).reason == TOO_SHORT


def test_bad_cap_is_an_error():
    with pytest.raises(ValueError):
        clean_caption("A dog runs.", max_chars=5)


def test_split_sentences():
    assert split_sentences("A dog runs. Mr. Smith waves! Is it sunny? yes") == [
        "A dog runs.", "Mr. Smith waves!", "Is it sunny?", "yes"]
