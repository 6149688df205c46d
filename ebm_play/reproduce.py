"""Reproduce a run: the exact ``python -m ebm_play train …`` line for given settings and data,
the settings back out of a weights file, and settings carried by a page address
(``?preset=fast&lr=0.002``, the TensorFlow Playground convention).

A command lists only what differs from its preset (``--preset`` chosen to make the line short),
so the CLI rebuilds the same :class:`~ebm_play.training.TrainConfig` field for field; the tests
parse every line back through the CLI's own parser.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from urllib.parse import parse_qs, urlencode

from .data import HELD_OUT, NAMES, Dataset
from .errors import EBMError
from .landscapes import train_config as landscape_config
from .training import PRESETS as TRAIN_PRESETS
from .training import TrainConfig
from .weights import read_metadata

PROG = "python -m ebm_play"
MAX_QUERY = 4000  # characters of a page address's settings
MAX_STEPS = 10_000_000
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _landscape_preset() -> dict:
    """The Landscape tab's settings for an MLP energy on 2-D points, as a preset."""
    ours, plain = asdict(landscape_config()), asdict(TrainConfig(model="mlp2d"))
    return {k: v for k, v in ours.items() if v != plain[k] or k == "model"}


# The trainer's presets (fast, reference) and the Landscape tab's (landscape), by name.
PRESETS: dict[str, dict] = {**TRAIN_PRESETS, "landscape": _landscape_preset()}


TRAIN_STEPS = 1000  # `python -m ebm_play train`'s --steps when none is given


@dataclass
class RunSettings:
    """Everything a training run is started with: the config, its length and its data."""

    config: TrainConfig
    steps: int = TRAIN_STEPS
    data: str | None = None  # what --data takes: a name or a path; None = MNIST from the default root
    labels_from_folders: bool = False
    held_out: float = HELD_OUT
    preset: str | None = None  # the preset the settings started from, when known

    def command(self, out: str = "my.safetensors") -> str:
        return train_command(self.config, self.data, self.steps, out, preset=self.preset,
                             labels_from_folders=self.labels_from_folders, held_out=self.held_out)

    def query(self) -> str:
        return query_string(self)


def _field_type(name: str) -> tuple[type, bool]:
    """(base type, whether None is allowed) of a TrainConfig field."""
    hint = typing.get_type_hints(TrainConfig)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    return (list if typing.get_origin(base) is list else base), optional


def _text(name: str, value) -> str:
    """A field's value as the CLI and a page address spell it."""
    base, optional = _field_type(name)
    if isinstance(value, bool) or base is str:
        return str(value).lower() if isinstance(value, bool) else str(value)
    if value is None:
        if not (optional and base is float):  # the CLI reads 'none' for optional floats only
            raise EBMError(f"{name} None cannot be written as a flag")
        return "none"
    if base is list:
        return ",".join(str(int(v)) for v in value)
    if base is float:
        return repr(float(value)) if not float(value).is_integer() else repr(float(value)).removesuffix(".0")
    return str(value)


def _changes(config: TrainConfig, preset: str | None) -> dict:
    """The fields of ``config`` that differ from ``preset`` (None: the defaults), model kind first."""
    base = TrainConfig(**{**PRESETS.get(preset or "reference", {}), "model": config.model})
    out = {"model": config.model}
    for f in dataclasses.fields(TrainConfig):
        if f.name != "model" and getattr(config, f.name) != getattr(base, f.name):
            out[f.name] = getattr(config, f.name)
    return out


def _best_preset(config: TrainConfig, preset: str | None) -> tuple[str | None, dict]:
    """The given preset when its flags can express ``config``, else the one with the fewest flags."""
    options = [preset] if preset in PRESETS else []
    options += [None] + [p for p in PRESETS if PRESETS[p]]
    best = None
    for p in options:
        try:  # (a preset of another objective does not apply to this model kind)
            changes = _changes(config, p)
            for k, v in changes.items():
                _text(k, v)
        except EBMError:
            continue
        if p == preset and p is not None:
            return p, changes
        if best is None or len(changes) < len(best[1]):
            best = (p, changes)
    if best is None:
        raise EBMError("these settings cannot be written as a command line")
    return best


def train_command(config: TrainConfig, data: Dataset | str | os.PathLike | None = None, steps: int = TRAIN_STEPS,
                  out: str = "my.safetensors", preset: str | None = None, labels_from_folders: bool | None = None,
                  held_out: float | None = None) -> str:
    """The exact ``python -m ebm_play train …`` line that trains ``config`` on ``data`` for ``steps``
    updates. ``data``: a :class:`Dataset` (its ``arg``, labels and held-out share), a name or a path
    (an app passes the uploaded file's own name), or None for MNIST."""
    if isinstance(data, Dataset):
        folders = data.labels_from_folders if labels_from_folders is None else labels_from_folders
        held = (data.held_out or HELD_OUT) if held_out is None else held_out
        arg = data.arg
    else:
        folders, held, arg = bool(labels_from_folders), HELD_OUT if held_out is None else held_out, data
    preset, changes = _best_preset(config, preset)
    words = [*PROG.split(), "train", "--model", config.model]
    if preset is not None:
        words += ["--preset", preset]
    if arg is not None:
        words += ["--data", str(arg)]
    if folders:
        words.append("--labels-from-folders")
    if held != HELD_OUT:
        words += ["--held-out", repr(float(held))]
    for name, value in changes.items():
        if name == "model":
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            words += [flag, _text(name, value)]
    words += ["--steps", str(int(steps)), "--out", str(out)]
    return shlex.join(words)


def run_info(config: TrainConfig, data: Dataset | None, steps: int) -> dict:
    """What a weights file records so that it can be reproduced: the settings at the start (a
    drift rollback changes the live config's sampler steps), the data and the command line."""
    info = {"start_config": asdict(config), "command": train_command(config, data, steps)}
    if data is not None:
        info["dataset"] = data.info()
    return info


# --- back from a weights file ----------------------------------------------------------------------
def settings_from_info(info: dict) -> RunSettings:
    """The settings a model was trained with, from its file's ``info``: the start config where
    recorded (else the final one), its updates and its data."""
    stored = info.get("start_config") or info.get("train_config")
    if not isinstance(stored, dict):
        raise EBMError("the file holds no training settings (it was not written by ebm_play's trainer)")
    config = TrainConfig.from_dict(stored)
    data = info.get("dataset") if isinstance(info.get("dataset"), dict) else {}
    arg = data.get("arg") if isinstance(data.get("arg"), str) else None
    old = re.fullmatch(r"MNIST train \((.+)\)", str(info.get("data", "")))  # files from before info["dataset"]
    if not data and old:
        arg = old.group(1)
    steps = info.get("train_steps", TRAIN_STEPS)
    steps = steps if isinstance(steps, int) and steps > 0 else TRAIN_STEPS
    held = data.get("held_out_fraction") or HELD_OUT
    return RunSettings(config, steps, arg, bool(data.get("labels_from_folders")),
                       held if isinstance(held, float) and 0 < held <= 0.5 else HELD_OUT)


def settings_from_file(path: str | os.PathLike) -> RunSettings:
    """:func:`settings_from_info` of a weights file, read from its metadata alone (no tensors)."""
    return settings_from_info(read_metadata(path).get("info", {}))


# --- a page address --------------------------------------------------------------------------------
def _value(name: str, text: str, base: type, optional: bool = False):
    """Text → a value of type ``base``; a bad value is one line naming the setting."""
    t = text.strip()
    try:
        if optional and t.lower() in ("none", "off", ""):
            return None
        if base is bool:
            if t.lower() not in _TRUE + _FALSE:
                raise ValueError
            return t.lower() in _TRUE
        if base is list:
            return [int(v) for v in t.split(",") if v.strip()]
        if base is int:
            return int(t)
        if base is float:
            v = float(t)
            if not math.isfinite(v):
                raise ValueError
            return v
        return t
    except ValueError:
        kind = {bool: "true or false", int: "a whole number", float: "a finite number",
                list: "whole numbers separated by commas"}.get(base, "text")
        raise EBMError(f"setting {name}: expected {kind}, got {text[:40]!r}") from None


def settings_from_query(query: str | Mapping) -> RunSettings:
    """Settings from a page address's query (``?preset=fast&lr=0.002&data=glyphs&steps=2000``) or
    its parsed mapping. Keys: ``preset``, ``steps``, ``data`` (a known name only: an address never
    names a file), ``labels_from_folders``, ``held_out`` and any TrainConfig field (``-`` or ``_``)."""
    if isinstance(query, str):
        if len(query) > MAX_QUERY:
            raise EBMError(f"the page address carries over {MAX_QUERY} characters of settings")
        query = parse_qs(query.lstrip("?"), keep_blank_values=True)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values, extra = {}, {}
    for key, value in query.items():
        value = value[-1] if isinstance(value, (list, tuple)) else value
        if not isinstance(value, str):
            raise EBMError(f"setting {key}: expected text, got {type(value).__name__}")
        k = str(key).replace("-", "_")
        if k in names:
            values[k] = _value(k, value, *_field_type(k))
        elif k in ("preset", "data", "steps", "labels_from_folders", "held_out"):
            extra[k] = value.strip()
        else:
            raise EBMError(f"unknown setting {str(key)[:40]!r} in the page address")
    preset = extra.get("preset") or None
    if preset is not None and preset not in PRESETS:
        raise EBMError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    data = extra.get("data") or None
    if data is not None and data not in NAMES:
        raise EBMError(f"data in a page address must be one of: {', '.join(NAMES)}")
    steps = _value("steps", extra["steps"], int) if "steps" in extra else TRAIN_STEPS
    if not 1 <= steps <= MAX_STEPS:
        raise EBMError(f"steps must be between 1 and {MAX_STEPS:,}, got {steps}")
    held = _value("held_out", extra["held_out"], float) if "held_out" in extra else HELD_OUT
    if not 0 < held <= 0.5:
        raise EBMError(f"held_out must be in (0, 0.5], got {held}")
    folders = _value("labels_from_folders", extra["labels_from_folders"], bool) if "labels_from_folders" in extra else False
    config = TrainConfig(**{**PRESETS.get(preset or "reference", {}), **values})
    return RunSettings(config, steps, data, folders, held, preset)


def query_string(settings: RunSettings) -> str:
    """The page-address query that :func:`settings_from_query` reads back into ``settings``."""
    preset, changes = _best_preset(settings.config, settings.preset)
    q = {"preset": preset} if preset else {}
    q.update({k: _text(k, v) for k, v in changes.items()})
    if settings.data is not None:
        q["data"] = settings.data
    if settings.labels_from_folders:
        q["labels_from_folders"] = "true"
    if settings.held_out != HELD_OUT:
        q["held_out"] = repr(float(settings.held_out))
    q["steps"] = str(int(settings.steps))
    return "?" + urlencode(q, safe=",")
