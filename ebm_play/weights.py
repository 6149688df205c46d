"""Model files: safetensors only, nothing pickled, self-describing.

A file holds the tensors plus one metadata entry, ``ebm_play``, a JSON object with the model's
``kind`` and constructor ``config`` (enough for :func:`load_model` to rebuild it from the file
alone) and free-form ``info`` (training facts, recommended sampler settings). Every check that can
fail names the problem, and nothing in a file is ever executed.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import EBMError
from .models import MODEL_KINDS, EnergyModel, build_model
from .runtime import resolve_device

FORMAT = 1
MAX_HEADER = 16 * 1024 * 1024  # our files' headers are a few kB
MAX_FILE = 512 * 1024 * 1024
WEIGHTS_DIR = Path(os.environ.get("EBM_PLAY_WEIGHTS", Path(__file__).resolve().parent.parent / "weights"))


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
    """Write ``model`` to ``path`` atomically: a temporary file in the same folder, then a rename,
    so a crash mid-write leaves any previous file intact."""
    path = Path(path)
    meta = {"format": FORMAT, "kind": model.kind, "config": model.config, "info": info or {}}
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"ebm_play": json.dumps(meta)})
        os.chmod(tmp, 0o644)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _check_header(path: Path) -> None:
    size = path.stat().st_size
    if size > MAX_FILE:
        raise EBMError(f"{path.name}: file is {size / 2**20:.0f} MB, larger than the {MAX_FILE // 2**20} MB limit")
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        raise EBMError(f"{path.name}: not a safetensors file (only {size} bytes)")
    if head[8:9] != b"{":  # a safetensors header is JSON right after its 8-byte length
        if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
            raise EBMError(f"{path.name}: this is a pickle/zip file (e.g. torch.save), not safetensors; it was not loaded")
        raise EBMError(f"{path.name}: not a safetensors file")
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER:
        raise EBMError(f"{path.name}: safetensors header claims {n} bytes, over the {MAX_HEADER} byte limit")
    if n > size - 8:
        raise EBMError(f"{path.name}: file is truncated (header says {n} bytes, file has {size - 8})")


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``ebm_play`` metadata of a file, validated."""
    path = Path(path)
    _check_header(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("ebm_play")
    except (SafetensorError, OSError, ValueError) as e:
        raise EBMError(f"{path.name}: not a valid safetensors file ({e})") from e
    if raw is None:
        raise EBMError(f"{path.name}: no ebm_play metadata (kind and config of the model are unknown)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise EBMError(f"{path.name}: ebm_play metadata is not valid JSON ({e.msg})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise EBMError(f"{path.name}: ebm_play metadata must be an object with a 'config' object")
    if meta.get("kind") not in MODEL_KINDS:
        raise EBMError(f"{path.name}: unknown model kind {meta.get('kind')!r} (known: {', '.join(MODEL_KINDS)})")
    for k, v in meta["config"].items():
        if not isinstance(v, (bool, int, float)) or (isinstance(v, float) and not math.isfinite(v)):
            raise EBMError(f"{path.name}: config entry {k!r} must be a finite number or boolean, got {v!r}")
    if not isinstance(meta.get("info", {}), dict):
        raise EBMError(f"{path.name}: metadata 'info' must be an object")
    return meta


def load_model(name_or_path: str | os.PathLike, device: str | torch.device | None = None) -> EnergyModel:
    """Rebuild a model from a shipped short name (``mnist``…) or a safetensors path, in eval mode."""
    path = resolve(name_or_path)
    meta = read_metadata(path)
    try:
        model = build_model(meta["kind"], **meta["config"])
    except EBMError as e:
        raise EBMError(f"{path.name}: {e}") from e
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise EBMError(f"{path.name}: cannot read tensors ({e})") from e
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing:
        raise EBMError(f"{path.name}: missing tensor {missing[0]!r} for a {meta['kind']} model")
    if extra:
        raise EBMError(f"{path.name}: unexpected tensor {extra[0]!r} for a {meta['kind']} model")
    for k, t in tensors.items():
        if t.shape != expected[k].shape:
            raise EBMError(f"{path.name}: tensor {k!r} has shape {tuple(t.shape)}, expected {tuple(expected[k].shape)}")
        if not t.is_floating_point():
            raise EBMError(f"{path.name}: tensor {k!r} has dtype {t.dtype}, expected a float type")
        if not torch.isfinite(t).all():
            raise EBMError(f"{path.name}: tensor {k!r} contains NaN or infinite values")
    model.load_state_dict({k: t.float() for k, t in tensors.items()})
    try:
        model.check()
    except EBMError as e:
        raise EBMError(f"{path.name}: {e}") from e
    model.info = meta.get("info", {})
    model.source = str(path)
    return model.to(resolve_device(device)).eval()
