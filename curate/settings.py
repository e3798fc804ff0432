"""Settings: every tunable of kvid, declared once, on the dataclass of the stage that uses it.

A setting is a dataclass field made with ``setting(default, help, ...)``: its default, its
help, its bounds and choices, and what it decides of the output. A dataclass nested in another
with ``group(Params, prefix)`` brings its settings along under ``prefix``. From one root
(``pipelines/config.py``) every setting becomes a YAML key and a ``--flag`` (the key is the
prefix plus the field name, one name from flag to field), a row of the report's settings
table, part of the resume guard when it decides which clips exist or what their bytes are,
and part of the clip ids' config hash when it decides the bytes. Nothing else lists settings.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# What a setting decides of the output.
BYTES = "bytes"  # how a clip's pixels are made: part of the clip id's hash; a resume may not change it
CLIPS = "clips"  # which clips exist and where they start and end: a resume may not change it
MOTION_UNITS = "motion_units"  # the units of the motion scores: a resume may not mix two
CAPTIONS = "captions"  # what the captions are (`kvid caption DIR` redoes them)
DECIDES = (BYTES, CLIPS, MOTION_UNITS, CAPTIONS)

_SETTING = "kvid.setting"
_GROUP = "kvid.group"


@dataclass(frozen=True)
class SettingInfo:
    help: str
    key: str | None  # the config key where it is not the group's prefix plus the field name
    decides: str | None
    choices: tuple[Any, ...] | None
    bounds: Mapping[str, float]  # pydantic's ge / gt / le / lt


@dataclass(frozen=True)
class GroupInfo:
    params: type  # the nested parameter dataclass
    prefix: str
    title: str


def setting(default: Any, help: str, *, key: str | None = None, decides: str | None = None,
            choices: tuple[Any, ...] | None = None, **bounds: float) -> Any:
    """A dataclass field that is a setting. ``key`` only where the plain name would not say what
    it is (a group's on/off switch: ``--dedup``, ``--flat-filter``). ``decides``: BYTES, CLIPS,
    MOTION_UNITS, CAPTIONS or None (threads, timeouts, workers: how it runs, not what comes out)."""
    if decides not in (None, *DECIDES):
        raise ValueError(f"decides must be one of {DECIDES} or None, not {decides!r}")
    info = SettingInfo(help, key, decides, tuple(choices) if choices else None, dict(bounds))
    return field(default=default, metadata={_SETTING: info})


def group(params: type, prefix: str = "", title: str | None = None) -> Any:
    """A dataclass field holding a nested parameter dataclass; its settings' keys start with
    ``prefix``. ``title`` names the group in ``--help`` and in the report (default: the title
    of the group it sits in)."""
    return field(default_factory=params, metadata={_GROUP: GroupInfo(params, prefix, title or "")})


@dataclass(frozen=True)
class Setting:
    key: str
    path: tuple[str, ...]  # field names from the root
    type: Any
    default: Any
    info: SettingInfo
    title: str  # the group it is shown under


def settings_of(params: type, prefix: str = "", title: str = "settings") -> list[Setting]:
    """Every setting below the dataclass ``params``, in declaration order; keys are unique."""
    found = list(_walk(params, prefix, title, ()))
    seen: dict[str, Setting] = {}
    for s in found:
        if s.key in seen:
            raise TypeError(f"setting key {s.key!r} is declared twice: {'.'.join(seen[s.key].path)} and {'.'.join(s.path)}")
        seen[s.key] = s
    return found


def _type_of(params: type, f: dataclasses.Field) -> Any:
    """A field's annotation as a type (``from __future__ import annotations`` leaves a string)."""
    if not isinstance(f.type, str):
        return f.type
    return eval(f.type, vars(sys.modules[params.__module__]))  # the module's own names, as it wrote them


def _walk(params: type, prefix: str, title: str, path: tuple[str, ...]) -> Iterator[Setting]:
    for f in dataclasses.fields(params):
        if _SETTING in f.metadata:
            info: SettingInfo = f.metadata[_SETTING]
            yield Setting(info.key or prefix + f.name, (*path, f.name), _type_of(params, f), f.default, info, title)
        elif _GROUP in f.metadata:
            g: GroupInfo = f.metadata[_GROUP]
            yield from _walk(g.params, prefix + g.prefix, g.title or title, (*path, f.name))


def build(params: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """An instance of ``params`` with every setting taken from ``values`` by key (a key not in
    ``values`` keeps its default); nested groups are built the same way. The dataclasses' own
    checks (``__post_init__``) run: a ValueError there is a bad setting."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        if _SETTING in f.metadata:
            key = f.metadata[_SETTING].key or prefix + f.name
            if key in values:
                kwargs[f.name] = values[key]
        elif _GROUP in f.metadata:
            g: GroupInfo = f.metadata[_GROUP]
            kwargs[f.name] = build(g.params, values, prefix + g.prefix)
    return params(**kwargs)


def pydantic_field(s: Setting) -> tuple[Any, Any]:
    """A setting as a pydantic field: its type (its choices as a Literal), default, help, bounds."""
    from pydantic import Field  # the config layers' library; the stages themselves never need it

    annotation = Literal[s.info.choices] if s.info.choices else s.type
    bounds: dict[str, Any] = dict(s.info.bounds)
    return annotation, Field(s.default, description=s.info.help, **bounds)


def value_at(root: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        root = getattr(root, name)
    return root


def values_of(root: Any, decides: str | None = None, prefix: str = "") -> dict[str, Any]:
    """The settings of an instance by key (only those that decide ``decides``, when given)."""
    return {s.key: value_at(root, s.path) for s in settings_of(type(root), prefix)
            if decides is None or s.info.decides == decides}


def check_device(device: str, what: str) -> None:
    """A device setting is auto (a GPU when the worker has one), cpu, cuda or cuda:N."""
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ValueError(f"{what} must be auto, cpu, cuda or cuda:N, not {device!r}")
