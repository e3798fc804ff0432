"""The curate run's configuration: one flat pydantic model, derived from the stages' settings.

Every setting is declared once, on the dataclass of the stage that uses it
(``curate.settings.setting``); ``Settings`` below is the root that gathers them, group by
group. From it come the config model (every setting a YAML key, ``--config FILE``, and a CLI
flag, ``--key-with-dashes``), the settings a resume may not change, the report's settings
table and the clip ids' config hash. Flags given on the command line override the file, the
file overrides the defaults. The effective config is written into the output's manifest.
"""

from __future__ import annotations

import argparse
import difflib
import os
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from caption.stage import CaptionPrepStage, CaptionStage
from curate.dedup import DedupParams
from curate.remote import is_uri
from curate.settings import BYTES, CLIPS, MOTION_UNITS, Setting, build, group, pydantic_field, setting, settings_of
from curate.shards import ShardParams
from curate.video_stages import CurateParams
from motion.backends import canonical_backend_name
from motion.stage import MotionStage


@dataclass(frozen=True)
class RayParams:
    """Where the run's Ray is."""

    ray_address: str | None = setting(
        None, "Ray cluster address (e.g. 'ray://head:10001' or 'auto'); default: start a local Ray")
    num_cpus: int | None = setting(None, "CPUs of the local Ray (default: all)", ge=1)


@dataclass(frozen=True)
class Settings:
    """Every setting of `kvid curate`, group by group; each group lives in its stage's file."""

    ray: RayParams = group(RayParams, title="ray")
    curate: CurateParams = group(CurateParams, title="run")
    dedup: DedupParams = group(DedupParams, "dedup_", "near-duplicates")
    motion: MotionStage = group(MotionStage, "motion_", "motion")
    caption_frames: CaptionPrepStage = group(CaptionPrepStage, "caption_", "captions")
    caption: CaptionStage = group(CaptionStage, "caption_", "captions")
    shards: ShardParams = group(ShardParams, "shard_", "shards")


SETTINGS: list[Setting] = settings_of(Settings)
# Settings that decide which clips exist and what their bytes are. Resuming into an output
# folder written with other values would mix two datasets, so it is refused.
OUTPUT_FIELDS = tuple(s.key for s in SETTINGS if s.info.decides in (BYTES, CLIPS))
# Settings that decide the units of the motion scores (which flow method, at which size).
# Scores of two backends or sizes are not comparable, so resuming with others is refused too.
MOTION_FIELDS = tuple(s.key for s in SETTINGS if s.info.decides == MOTION_UNITS)


def keys_of(*groups: str) -> tuple[str, ...]:
    """The keys of the settings of some groups of ``Settings`` (by field: "motion", "caption")."""
    return tuple(s.key for s in SETTINGS if s.path[0] in groups)


class ConfigError(ValueError):
    """A bad config: the message says which key and what to do."""


class _ConfigBase(BaseModel):
    # The whole model is CurateConfig below: these fields plus every declared setting.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Inputs and outputs (CLI positionals and --out; may also be set in the YAML).
    inputs: list[str] = Field(
        default_factory=list,
        description="video files, folders (searched recursively) or globs; or URIs of them (s3://, gs://, https://, file://)",
    )
    out: str | None = Field(None, description="output folder (shards/, index/, rejects/, manifest.json)")

    @field_validator("out")
    @classmethod
    def _out(cls, v: str | None) -> str | None:
        if v is not None and is_uri(v):
            raise ValueError(
                "must be a folder path (local or a shared mount): shards are committed with atomic "
                "renames, which object stores lack; write there, then sync the finished folder"
            )
        return v

    @model_validator(mode="after")
    def _stages_accept(self) -> _ConfigBase:
        """The stages' own checks (a setting against another, a device name, a backend)."""
        try:
            self.settings()
        except (TypeError, ValueError) as e:
            raise ValueError(str(e)) from None
        return self

    def settings(self) -> Any:
        """The settings as the stages take them (a ``Settings``)."""
        return build(Settings, self.model_dump())

    def curate_params(self) -> CurateParams:
        return self.settings().curate

    @property
    def motion_enabled(self) -> bool:
        return self.settings().motion.enabled

    @property
    def caption_enabled(self) -> bool:
        return self.settings().caption.enabled

    def output_settings(self) -> dict:
        return {k: getattr(self, k) for k in OUTPUT_FIELDS}

    def motion_units(self) -> dict:
        """What the motion scores' units depend on, aliases resolved (``raft`` = ``raft_large``);
        the size is left out when motion is off (there are no scores)."""
        return motion_units(self.model_dump())


def config_model(settings: list[Setting] | None = None) -> type[_ConfigBase]:
    """The config model: inputs and out, plus one field per setting."""
    fields = {s.key: pydantic_field(s) for s in (SETTINGS if settings is None else settings)}
    return create_model("CurateConfig", __base__=_ConfigBase, __module__=__name__, **fields)  # type: ignore[call-overload]


CurateConfig = config_model()


def motion_units(config: dict) -> dict:
    """``motion_units`` of a config dict (a manifest's ``config``). A manifest written before
    the backend was recorded gives what it has; an unknown backend name is kept as written."""
    backend = config.get("motion_backend")
    if backend is None:
        return {}
    if backend == "none":
        return {"motion_backend": "none"}
    try:
        backend = canonical_backend_name(backend)
    except ValueError:
        pass
    units = {"motion_backend": backend}
    if "motion_size" in config:
        units["motion_size"] = config["motion_size"]
    return units


def resume_problem(cfg: CurateConfig, manifest: dict | None) -> str | None:
    """Why curating ``cfg`` into the folder of ``manifest`` would mix two datasets, or None.

    Compares the clip-defining settings (OUTPUT_FIELDS) and the motion score units
    (MOTION_FIELDS, as the manifest records them after `kvid motion recompute` too)."""
    if not manifest:
        return None
    before = manifest.get("config", {})
    changed = [(k, before[k], v) for k, v in cfg.output_settings().items() if k in before and before[k] != v]
    old_units, new_units = motion_units(before), cfg.motion_units()
    changed += [(k, old_units[k], new_units[k]) for k in MOTION_FIELDS
                if k in old_units and k in new_units and old_units[k] != new_units[k]]
    if not changed:
        return None
    diffs = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed)
    advice = "use a new --out folder, or the same settings as before"
    if any(k in MOTION_FIELDS for k, _, _ in changed):
        advice += (f" (the folder's motion scores are {_describe_units(old_units)}; to change them for every clip, "
                   f"run `kvid motion recompute {cfg.out} --backend B --size N` first)")
    return f"{cfg.out} was written with different settings ({diffs}). Resuming would mix two datasets: {advice}."


def _describe_units(units: dict) -> str:
    if units.get("motion_backend") == "none":
        return "absent (motion_backend none)"
    size = f" at {units['motion_size']} px" if "motion_size" in units else ""
    return f"{units['motion_backend']}{size}"


def _format_error(e: ValidationError, origin: str) -> str:
    """Every problem on one line (``kvid: error: ...``), each naming its key and flag."""
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"])
        flag = "--" + key.replace("_", "-")
        msg = err["msg"].removeprefix("Value error, ")
        if not key:  # a stage's own check of several settings: its message names them
            lines.append(msg)
            continue
        if err["type"] == "extra_forbidden":
            hint = suggest(key, list(CurateConfig.model_fields))
            msg = f"unknown key; did you mean {hint}?" if hint else "unknown key (`kvid curate --help` lists the keys)"
            lines.append(f"{key}: {msg}")
            continue
        lines.append(f"{key} ({flag}): {msg}")
    return f"invalid configuration ({origin}): " + "; ".join(lines)


def suggest(word: str, known: list[str]) -> str | None:
    """The known name ``word`` most likely meant: the same name spelled with - or _ the
    other way, else the closest match (typos), else None."""
    for sep_from, sep_to in (("-", "_"), ("_", "-")):
        if word.replace(sep_from, sep_to) in known:
            return word.replace(sep_from, sep_to)
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.75)
    return close[0] if close else None


def load_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, not {type(data).__name__}")
    return data


def build_config(file_values: dict, overrides: dict, origin: str = "config",
                 model: type[_ConfigBase] = CurateConfig) -> Any:
    """Defaults < file values < overrides; raises ConfigError with every problem listed."""
    try:
        return model(**{**file_values, **overrides})
    except ValidationError as e:
        raise ConfigError(_format_error(e, origin)) from e


# --- CLI flags generated from the model: one place for names, types and help -------------

_POSITIONAL = ("inputs",)


def field_choices(name: str, model: type[BaseModel] = CurateConfig) -> tuple | None:
    """The allowed values of a field (its Literal values), or None."""
    field = model.model_fields[name]
    return typing.get_args(field.annotation) if typing.get_origin(field.annotation) is Literal else None


def field_help(name: str, model: type[BaseModel] = CurateConfig) -> str:
    """The flag's help: the description and its default, said once (a description that
    explains its own default, e.g. "(default: all)", keeps its words). Choices show in the
    flag's metavar."""
    field = model.model_fields[name]
    default = field.default if field.default_factory is None else field.default_factory()
    text = field.description or ""
    if "default" not in text.lower() and default is not None and default != []:
        text += f" (default: {default})"
    return text


def add_config_flags(parser: argparse.ArgumentParser, model: type[BaseModel] = CurateConfig,
                     settings: list[Setting] | None = None) -> None:
    """One --flag per config field (but the positionals), in one group per settings group.
    Values stay strings here and pydantic converts and validates them, so the CLI and YAML
    share every rule."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    title_of = {s.key: s.title for s in (SETTINGS if settings is None else settings)}
    for name, field in model.model_fields.items():
        if name in _POSITIONAL:
            continue
        title = title_of.get(name, "output")
        if title not in groups:
            groups[title] = parser.add_argument_group(
                title, "Each setting below is also a YAML key (--config FILE); flags override the file." if not groups else None)
        group = groups[title]
        flag = "--" + name.replace("_", "-")
        help_text = field_help(name, model)
        if field.annotation is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif choices := field_choices(name, model):
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, choices=[str(c) for c in choices],
                               metavar="{" + ",".join(map(str, choices)) + "}", help=help_text)
        else:
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar=name.upper(), help=help_text)


def overrides_from_args(args: argparse.Namespace, model: type[BaseModel] = CurateConfig) -> dict:
    """The config fields that were given on the command line. An empty positional list
    means none were given (a YAML ``inputs:`` then counts), not "no inputs"."""
    return {
        k: v for k, v in vars(args).items()
        if k in model.model_fields and not (k in _POSITIONAL and not v)
    }
