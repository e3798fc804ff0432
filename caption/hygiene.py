"""Caption hygiene: turn a VLM's raw answer into a clean caption, or say why not.

``clean_caption(text, max_chars=...)`` strips markdown, bullets, quotes, labels and
boilerplate openings ("The video shows ...", "In this video, ..."), collapses whitespace,
drops a trailing unfinished sentence, and cuts at the last sentence boundary under the
length cap. Outputs that are not captions come back with ``caption=None`` and a reason
(stored by the stage as reject reason ``caption_failed``, with the reason and raw text in
``error_message``): empty, too short, refusal, repetitive (loops, repeated sentences, low
vocabulary), or garbage (not text).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

# Reasons (the "why" in error_message; the record's reject_reason is caption_failed).
EMPTY = "empty"
TOO_SHORT = "too_short"
REFUSAL = "refusal"
REPETITIVE = "repetitive"
GARBAGE = "garbage"

DEFAULT_MAX_CHARS = 800
DEFAULT_MIN_WORDS = 4


@dataclass(frozen=True)
class CleanResult:
    caption: str | None
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.caption is not None


# --------------------------------------------------------------------------- patterns

_MEDIUM = r"(?:video|clip|footage|film|movie|animation|scene|sequence|image|picture|frames?|shot|gif|recording)"
_VERB = (
    r"(?:shows|showcases|depicts|features|presents|captures|displays|illustrates|portrays|highlights|"
    r"contains|is\s+showing|appears\s+to\s+show|seems\s+to\s+show|begins\s+with|opens\s+with|starts\s+with|"
    r"is\s+of|is\s+about)"
)
# Words that may sit between the article and the medium without carrying content.
_FILLER = r"(?:(?:short|brief|given|provided|following|entire|whole|above)\s+)?"
_BOILERPLATE = [
    # "Sure! Here is a detailed description of the video:" and friends.
    re.compile(r"^(?:sure|certainly|of\s+course|okay|ok|absolutely)\b[!,.:]?\s*", re.I),
    re.compile(r"^here(?:'s|\s+is)\s+(?:a|an|the|my)\s+(?:\w+\s+){0,3}?(?:description|caption|summary)\b[^:.\n]*[:.]\s*", re.I),
    # "The video shows", "This short clip depicts that", "The footage begins with"
    re.compile(rf"^(?:the|this|a|an)\s+{_FILLER}{_MEDIUM}(?:\s+clip)?\s+{_VERB}\s*(?:that|how)?\s*[:,]?\s*", re.I),
    # "In this video, we see", "Throughout the clip,", "In the footage there is"
    re.compile(
        rf"^(?:in|throughout|within)\s+(?:the|this)\s+{_FILLER}{_MEDIUM}\s*,?\s*(?:we\s+(?:can\s+)?see|you\s+can\s+see|there\s+(?:is|are)|it\s+shows)?\s*[:,]?\s*",
        re.I,
    ),
    # "The video is a close-up of ..." -> "A close-up of ..."
    re.compile(rf"^(?:the|this)\s+{_MEDIUM}\s+is\s+(?=(?:a|an)\s)", re.I),
    # "We see a man ...", "You can see ...", "Here we see ..."
    re.compile(r"^(?:here\s+)?(?:we|you)\s+(?:can\s+)?see\s+", re.I),
]
_LABEL = re.compile(r"^(?:caption|description|answer|assistant|response|output|summary)\s*:\s*", re.I)
_REFUSAL = re.compile(
    r"^(?:i'?m\s+sorry|i\s+am\s+sorry|sorry\b|i\s+apologi[sz]e|i\s+(?:cannot|can'?t|am\s+unable|'m\s+unable|"
    r"am\s+not\s+able|'m\s+not\s+able|do\s+not\s+have|don'?t\s+have)|as\s+an\s+ai\b|unfortunately,?\s+i\b|"
    r"there\s+is\s+no\s+(?:video|image)|no\s+(?:video|image)\s+(?:was|is)\s+provided)",
    re.I,
)
_MARKDOWN_LINE = re.compile(r"^\s*(?:#{1,6}\s+|>\s*|[-*+\u2022\u2023\u25e6]\s+|\d{1,2}[.)]\s+)")
_HEADING = re.compile(r"^\s*#{1,6}\s+(?:\S+\s*){0,5}$")
_INLINE_MD = re.compile(r"(\*\*|__|\*|`+|~~)")
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb", "`": "`"}
# A sentence ends at . ! ? (optionally closed by a quote or bracket) followed by a space or the end.
_SENT_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]?(?=\s|$)")
_ABBREV = re.compile(r"(?:\b(?:e\.g|i\.e|etc|vs|mr|mrs|ms|dr|st|jr|sr|approx|no)|\b[A-Z])\.$", re.I)
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*", re.UNICODE)


def _strip_controls(text: str) -> str:
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\n\t":
            out.append(ch)
        elif cat in ("Cc", "Cf", "Co", "Cs", "Cn"):
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def _strip_markdown(text: str) -> str:
    # A short heading line ("## Description") is a label, not content: drop it.
    lines = [line for line in text.splitlines() if not _HEADING.match(line)]
    lines = [_MARKDOWN_LINE.sub("", line) for line in lines]
    text = "\n".join(lines)
    return _INLINE_MD.sub("", text)


def _unquote(text: str) -> str:
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] == _QUOTES[text[0]]:
        inner = text[1:-1].strip()
        if text[0] in inner:  # "a" and "b" -> keep
            break
        text = inner
    return text


def _strip_boilerplate(text: str) -> str:
    for _ in range(4):
        before = text
        text = _LABEL.sub("", text)
        for pat in _BOILERPLATE:
            text = pat.sub("", text, count=1).lstrip(" ,:;-")
        if text == before:
            break
    return text


def _capitalise(text: str) -> str:
    for i, ch in enumerate(text):
        if ch.isalpha():
            return text[:i] + ch.upper() + text[i + 1:]
        if not (ch in "\"'([\u201c\u2018" or ch.isspace()):
            return text
    return text


def _sentence_ends(text: str) -> list[int]:
    """Character offsets just after each sentence end (abbreviations like 'e.g.' skipped)."""
    ends = []
    for m in _SENT_END.finditer(text):
        head = text[: m.start() + 1]
        if text[m.start()] == "." and _ABBREV.search(head[-8:]):
            continue
        ends.append(m.end())
    return ends


def split_sentences(text: str) -> list[str]:
    out, start = [], 0
    for end in _sentence_ends(text):
        s = text[start:end].strip()
        if s:
            out.append(s)
        start = end
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def _cut(text: str, max_chars: int) -> str:
    """At most ``max_chars``: the last sentence end under the cap, else the last word boundary."""
    if len(text) <= max_chars:
        return text
    ends = [e for e in _sentence_ends(text) if e <= max_chars]
    if ends and ends[-1] >= max_chars // 4:
        return text[: ends[-1]].rstrip()
    head = text[: max_chars + 1]
    space = head.rfind(" ")
    head = head[:space] if space > 0 else text[:max_chars]
    return head.rstrip(" ,;:-\u2013\u2014(").rstrip()


def _drop_unfinished(text: str) -> str:
    """Drop a trailing sentence fragment (generation stopped at max_new_tokens) when a
    complete sentence precedes it."""
    if not text or text[-1] in ".!?\"'\u201d\u2019)":
        return text
    ends = _sentence_ends(text)
    if ends:
        return text[: ends[-1]].rstrip()
    return text


# --------------------------------------------------------------------------- degeneracy


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def repetition_reason(text: str) -> str:
    """Why ``text`` looks like a generation loop ("" when it does not)."""
    words = _words(text)
    n = len(words)
    # The same word many times in a row ("very very very very").
    run = 1
    for a, b in zip(words, words[1:]):
        run = run + 1 if a == b else 1
        if run >= 4:
            return f"word {a!r} repeated {run} times in a row"
    # The same sentence twice.
    seen = Counter(re.sub(r"\W+", " ", s.lower()).strip() for s in split_sentences(text))
    for s, c in seen.items():
        if c >= 2 and len(s.split()) >= 3:
            return f"sentence repeated {c} times: {s[:60]!r}"
    if n >= 12:
        # A 4-gram three or more times.
        grams = Counter(tuple(words[i:i + 4]) for i in range(n - 3))
        gram, count = grams.most_common(1)[0]
        if count >= 3:
            return f"phrase {' '.join(gram)!r} repeated {count} times"
        # Share of words covered by 3-grams that occur more than once.
        tri = [tuple(words[i:i + 3]) for i in range(n - 2)]
        tri_counts = Counter(tri)
        covered = set()
        for i, g in enumerate(tri):
            if tri_counts[g] > 1:
                covered.update((i, i + 1, i + 2))
        if len(covered) / n > 0.5:
            return f"{len(covered) / n:.0%} of words in repeated phrases"
    if n >= 16:
        unique = len(set(words)) / n
        if unique < 0.35:
            return f"only {unique:.0%} distinct words"
    return ""


def garbage_reason(text: str) -> str:
    """Why ``text`` does not look like natural-language text ("" when it does)."""
    if "\ufffd" in text:
        return "undecodable bytes in output"
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return "no text"
    letters = sum(c.isalpha() for c in chars)
    if letters / len(chars) < 0.6:
        return f"only {letters / len(chars):.0%} letters"
    tokens = text.split()
    if any(len(t) > 45 for t in tokens):
        return "word longer than 45 characters"
    wordlike = sum(1 for t in tokens if _WORD.fullmatch(t.strip(".,;:!?\"'()[]\u201c\u201d\u2018\u2019")))
    if tokens and wordlike / len(tokens) < 0.6:
        return f"only {wordlike / len(tokens):.0%} of tokens are words"
    return ""


# --------------------------------------------------------------------------- public


def normalise(text: str) -> str:
    """Markdown, labels, quotes and boilerplate stripped; whitespace collapsed; capitalised."""
    text = unicodedata.normalize("NFC", text)
    text = _strip_controls(text)
    text = _strip_markdown(text)
    text = " ".join(text.split())
    text = _unquote(text)
    text = _strip_boilerplate(text)
    text = _unquote(text.strip())
    return _capitalise(text.strip())


def clean_caption(
    text: str | None,
    max_chars: int = DEFAULT_MAX_CHARS,
    *,
    min_words: int = DEFAULT_MIN_WORDS,
    drop_unfinished: bool = True,
) -> CleanResult:
    """Clean one raw VLM answer. ``caption`` is None (with ``reason``) for degenerate output."""
    if max_chars < 20:
        raise ValueError(f"max_chars must be >= 20, got {max_chars}")
    if text is None or not isinstance(text, str) or not text.strip():
        return CleanResult(None, EMPTY, "no text generated")
    if text.count("\ufffd") > 0:
        return CleanResult(None, GARBAGE, "undecodable bytes in output")
    cleaned = normalise(text)
    if not cleaned:
        return CleanResult(None, EMPTY, "nothing left after removing boilerplate")
    if _REFUSAL.match(cleaned):
        return CleanResult(None, REFUSAL, cleaned[:80])
    # Judge loops on the whole answer: a caption that degenerates after two good
    # sentences is a failed generation even if the cap would hide the loop.
    rep = repetition_reason(cleaned)
    if rep:
        return CleanResult(None, REPETITIVE, rep)
    garbage = garbage_reason(cleaned)
    if garbage:
        return CleanResult(None, GARBAGE, garbage)
    if drop_unfinished:
        cleaned = _drop_unfinished(cleaned)
    cleaned = _cut(cleaned, max_chars)
    if len(_words(cleaned)) < min_words:
        return CleanResult(None, TOO_SHORT, f"{len(_words(cleaned))} words")
    return CleanResult(cleaned)
