"""Model files: safetensors only, nothing pickled, self-describing, checked before anything is built.

A file holds the tensors plus one metadata entry, ``ebm_play``, a JSON object with the model's
``kind`` and constructor ``config`` (enough for :func:`load_model` to rebuild it from the file
alone) and free-form ``info`` (training facts, recommended sampler settings). A file's metadata
decides what gets built, so :func:`inspect_file` checks all of it first, allocating nothing: the
header and metadata JSON (size, nesting depth, duplicate keys or tensor names), every config field
against its bounds, the parameter count the config implies against a size limit and against the
tensors the file holds (names, shapes, dtypes, byte lengths), and the stored sampler settings
through the samplers' own validator. Every refusal is one line naming the file and the field, and
nothing in a file is ever executed.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import samplers
from .errors import EBMError, shown
from .files import atomic_write
from .models import MODEL_KINDS, EnergyModel, build_model, check_config, state_shapes
from .runtime import resolve_device

FORMAT = 1
MAX_HEADER = 16 * 1024 * 1024  # our files' headers are a few kB
MAX_FILE = 512 * 1024 * 1024
WEIGHTS_DIR = Path(os.environ.get("EBM_PLAY_WEIGHTS", Path(__file__).resolve().parent.parent / "weights"))
DTYPE_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}  # the tensor types a model file may hold


@dataclass(frozen=True)
class Limits:
    """What a weights file may ask of the process that reads it. The CLI reads files its user
    chose (:data:`FILE_LIMITS`); the app reads uploads from anyone (:data:`UPLOAD_LIMITS`)."""

    max_file_bytes: int = MAX_FILE
    max_header_bytes: int = MAX_HEADER
    max_params: int = 100_000_000  # numbers in all tensors: 400 MB as float32
    max_depth: int = 32  # nesting of JSON arrays and objects (our files: 6)


FILE_LIMITS = Limits()
# The shipped models hold at most 232k numbers; 4M allows a width-64 CNN or JEM, or an RBM of 4096 hidden units.
UPLOAD_LIMITS = Limits(max_file_bytes=64 * 1024 * 1024, max_header_bytes=1024 * 1024, max_params=4_000_000)


@dataclass(frozen=True)
class FileInfo:
    """What :func:`inspect_file` found: the validated metadata and the tensors the model will hold."""

    path: Path
    kind: str
    config: dict
    info: dict
    shapes: dict[str, tuple[int, ...]] = field(repr=False)  # every tensor's name and shape
    params: int  # numbers in those tensors (parameters and buffers)
    nbytes: int  # their size in memory as float32, the model's size once loaded
    file_bytes: int  # the size of the file

    @property
    def metadata(self) -> dict:
        return {"format": FORMAT, "kind": self.kind, "config": dict(self.config), "info": self.info}


def shipped_models(energies_only: bool = True) -> list[str]:
    """Short names of the models in the weights folder (``mnist``, ``mnist-jem`` …); the
    evaluation classifier is listed only with ``energies_only=False``."""
    names = []
    for p in sorted(WEIGHTS_DIR.glob("*.safetensors"), key=lambda p: p.stem):
        if energies_only:
            try:
                if not MODEL_KINDS[read_metadata(p)["kind"]].is_energy:
                    continue
            except EBMError:
                pass  # listed, so that loading it reports what is wrong
        names.append(p.stem)
    return names


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A short name (``mnist``) means ``weights/mnist.safetensors``; anything else is a path."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = WEIGHTS_DIR / f"{p.name}.safetensors"
    if str(p) == p.name and shipped.is_file():
        return shipped
    known = ", ".join(shipped_models(energies_only=False)) or "none shipped yet"
    raise EBMError(f"no model file or shipped model named {str(name_or_path)!r} (shipped: {known})")


def save_model(model: EnergyModel, path: str | os.PathLike, info: dict | None = None) -> Path:
    """Write ``model`` to ``path`` atomically (:func:`ebm_play.files.atomic_write`): a crash
    mid-write leaves any previous file intact, and a path that is not a regular file is refused."""
    meta = {"format": FORMAT, "kind": model.kind, "config": model.config, "info": info or {}}
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"ebm_play": json.dumps(meta)}))


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text``, strings skipped, in linear
    time and without recursion (json's own parser recurses: 100,000 levels raise RecursionError)."""
    b = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "replace"), np.uint8)
    step = ((b == ord("[")) | (b == ord("{"))).astype(np.int32) - ((b == ord("]")) | (b == ord("}")))
    return int(step.cumsum().max(initial=0))


def _object(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set = set()
        raise EBMError(f"duplicate key {shown(next(k for k, _ in pairs if k in seen or seen.add(k)))}")
    return d


def _parse_json(text: str, what: str, limits: Limits):
    depth = _depth(text)
    if depth > limits.max_depth:
        raise EBMError(f"{what} is nested {depth} levels deep, more than the {limits.max_depth} allowed")
    try:
        return json.loads(text, object_pairs_hook=_object)
    except EBMError as e:
        raise EBMError(f"{what}: {e}") from e
    except ValueError as e:  # JSONDecodeError, or a number of more than 4,300 digits
        raise EBMError(f"{what} is not valid JSON ({getattr(e, 'msg', e)})") from e


def _read_header(path: Path, limits: Limits) -> tuple[dict, int]:
    """The safetensors header (JSON after an 8-byte length) and the size of the data after it."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):  # opening a pipe would wait for a writer
        raise EBMError("not a regular file")
    size = st.st_size
    if size > limits.max_file_bytes:
        raise EBMError(f"file is {size / 2**20:.0f} MB, larger than the {limits.max_file_bytes // 2**20} MB limit")
    with open(path, "rb") as f:
        head = f.read(9)
        if len(head) < 9:
            raise EBMError(f"not a safetensors file (only {size} bytes)")
        if head[8:9] != b"{":  # a safetensors header is JSON right after its 8-byte length
            if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
                raise EBMError("this is a pickle/zip file (e.g. torch.save), not safetensors; it was not loaded")
            raise EBMError("not a safetensors file")
        (n,) = struct.unpack("<Q", head[:8])
        if n > limits.max_header_bytes:
            raise EBMError(f"safetensors header claims {n} bytes, over the {limits.max_header_bytes} byte limit")
        if n > size - 8:
            raise EBMError(f"file is truncated (header says {n} bytes, file has {size - 8})")
        f.seek(8)
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EBMError("safetensors header is not UTF-8 text") from e
    header = _parse_json(text, "safetensors header", limits)
    if not isinstance(header, dict):
        raise EBMError("safetensors header is not a JSON object")
    return header, size - 8 - n


def _tensor_shapes(header: dict, data_bytes: int) -> dict[str, tuple[int, ...]]:
    """Name → shape of each tensor entry, with its type and byte range checked."""
    shapes = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise EBMError(f"tensor {shown(name)}: malformed header entry")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_BYTES:
            raise EBMError(f"tensor {shown(name)} has dtype {shown(dtype)}, expected a float type ({', '.join(DTYPE_BYTES)})")
        if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
            raise EBMError(f"tensor {shown(name)} has shape {shown(shape)}, not a list of sizes")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or any(isinstance(o, bool) or not isinstance(o, int) for o in offsets)):
            raise EBMError(f"tensor {shown(name)}: malformed data offsets {shown(offsets)}")
        if offsets[1] > data_bytes:
            raise EBMError(f"file is truncated: tensor {shown(name)} ends at byte {shown(offsets[1])}, the data has {data_bytes}")
        if not 0 <= offsets[0] <= offsets[1] or offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise EBMError(f"tensor {shown(name)}: its {shown(shape)} {dtype} values do not fit its place in the file")
        shapes[name] = tuple(shape)
    return shapes


def _ebm_metadata(header: dict, limits: Limits) -> dict:
    extra = header.get("__metadata__") or {}
    if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
        raise EBMError("safetensors metadata must map names to strings")
    raw = extra.get("ebm_play")
    if raw is None:
        raise EBMError("no ebm_play metadata (kind and config of the model are unknown)")
    meta = _parse_json(raw, "ebm_play metadata", limits)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise EBMError("ebm_play metadata must be an object with a 'config' object")
    if meta.get("format", FORMAT) != FORMAT:
        raise EBMError(f"file format {shown(meta['format'])}; this version of ebm_play reads format {FORMAT}")
    if not isinstance(meta.get("kind"), str) or meta["kind"] not in MODEL_KINDS:
        raise EBMError(f"unknown model kind {shown(meta.get('kind'))} (known: {', '.join(MODEL_KINDS)})")
    if not isinstance(meta.get("info", {}), dict):
        raise EBMError("metadata 'info' must be an object")
    return meta


def _check_info(info: dict) -> dict:
    """The parts of ``info`` that code reads, validated: the recommended sampler settings (through
    :func:`ebm_play.samplers.check_options`, as a user's would be) and the training step count."""
    info = dict(info)
    if "samplers" in info:
        stored = info["samplers"]
        if not isinstance(stored, dict):
            raise EBMError(f"info 'samplers' must be an object of sampler: settings, got {type(stored).__name__}")
        checked = {}
        for name, settings in stored.items():
            try:
                checked[name] = samplers.check_options(name, settings, stored=True)
            except EBMError as e:
                raise EBMError(f"stored sampler settings {shown(name)}: {e}") from e
        info["samplers"] = checked
    if "train_steps" in info:
        info["train_steps"] = samplers.whole("info 'train_steps'", info["train_steps"], 0, 2**62)
    return info


def inspect_file(path: str | os.PathLike, limits: Limits = FILE_LIMITS) -> FileInfo:
    """Check a weights file without building its model or reading its tensors (see the module
    docstring for what is checked); raises EBMError, one line that names the file and the field."""
    path = Path(path)
    try:
        header, data_bytes = _read_header(path, limits)
        meta = _ebm_metadata(header, limits)
        kind = meta["kind"]
        config = check_config(kind, meta["config"])
        info = _check_info(meta.get("info", {}))
        expected = state_shapes(kind, config)
        params = sum(math.prod(s) for s in expected.values())
        if params > limits.max_params:
            raise EBMError(f"a {kind} model of {shown(config, 80)} has {params:,} parameters, more than the "
                           f"{limits.max_params:,} allowed")
        found = _tensor_shapes(header, data_bytes)
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        if missing:
            raise EBMError(f"missing tensor {missing[0]!r} for a {kind} model")
        if extra:
            raise EBMError(f"unexpected tensor {shown(extra[0])} for a {kind} model")
        for k, shape in found.items():
            if shape != expected[k]:
                raise EBMError(f"tensor {k!r} has shape {shown(shape)}, expected {expected[k]} for {shown(config, 80)}")
    except EBMError as e:
        raise EBMError(f"{path.name}: {e}") from e
    except OSError as e:
        raise EBMError(f"{path.name}: cannot read the file ({e.strerror or e})") from e
    return FileInfo(path, kind, config, info, expected, params, 4 * params, path.stat().st_size)


def read_metadata(path: str | os.PathLike, limits: Limits = FILE_LIMITS) -> dict:
    """The ``ebm_play`` metadata of a file (format, kind, config, info), after :func:`inspect_file`."""
    return inspect_file(path, limits).metadata


def load_model(name_or_path: str | os.PathLike, device: str | torch.device | None = None,
               limits: Limits = FILE_LIMITS) -> EnergyModel:
    """Rebuild a model from a shipped short name (``mnist``…) or a safetensors path, in eval mode.
    :func:`inspect_file` checks the file first; the model is built only once its size and every
    tensor's name and shape are known to fit."""
    path = resolve(name_or_path)
    found = inspect_file(path, limits)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in found.shapes}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise EBMError(f"{path.name}: cannot read tensors ({e})") from e
    for k, t in tensors.items():
        if tuple(t.shape) != found.shapes[k] or not t.is_floating_point():  # the file changed since inspect_file
            raise EBMError(f"{path.name}: tensor {k!r} changed while the file was read")
        if not torch.isfinite(t).all():
            raise EBMError(f"{path.name}: tensor {k!r} contains NaN or infinite values")
    model = build_model(found.kind, **found.config)
    model.load_state_dict({k: t.float() for k, t in tensors.items()})
    try:
        model.check()
    except EBMError as e:
        raise EBMError(f"{path.name}: {e}") from e
    model.info = found.info
    model.source = str(path)
    return model.to(resolve_device(device)).eval()
