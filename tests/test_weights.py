import json
import os
import pickle
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import ebm_play
from ebm_play import weights
from ebm_play.errors import EBMError
from ebm_play.models import CONFIG_BOUNDS, MODEL_KINDS, JEMEnsemble, build_model
from ebm_play.samplers import SAMPLERS


@pytest.fixture
def model():
    torch.manual_seed(0)
    return ebm_play.CNNEnergy(width=4)


@pytest.fixture
def saved(model, tmp_path):
    return ebm_play.save_model(model, tmp_path / "m.safetensors", info={"note": "test"})


def write(path, tensors, meta):
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=None if meta is None else {"ebm_play": meta if isinstance(meta, str) else json.dumps(meta)})
    return path


def meta_of(model):
    return {"format": 1, "kind": model.kind, "config": model.config}


@pytest.mark.parametrize("m", [ebm_play.CNNEnergy(width=4, spectral_norm=True), ebm_play.JEMEnergy(width=4), ebm_play.RBM(hidden=8),
                               JEMEnsemble(2, width=4)])
def test_round_trip_rebuilds_the_model_from_the_file_alone(m, tmp_path):
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    m.eval()
    path = ebm_play.save_model(m, tmp_path / "x.safetensors", info={"steps": 5})
    loaded = ebm_play.load_model(path)
    assert type(loaded) is type(m) and loaded.info == {"steps": 5}
    assert torch.allclose(loaded(x), m(x), atol=1e-6)


def test_short_names_resolve_in_the_weights_folder(saved, monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", saved.parent)
    assert weights.shipped_models() == ["m"]
    assert isinstance(ebm_play.load_model("m"), ebm_play.CNNEnergy)
    with pytest.raises(EBMError, match="no model file or shipped model named 'nope'.*shipped: m"):
        ebm_play.load_model("nope")


def test_pickle_renamed_to_safetensors_is_refused_unexecuted(tmp_path):
    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    for i, blob in enumerate([pickle.dumps(Boom()), None]):
        p = tmp_path / f"evil{i}.safetensors"
        if blob is None:
            torch.save({"w": torch.zeros(1)}, p)  # a zip archive holding a pickle
        else:
            p.write_bytes(blob)
        with pytest.raises(EBMError, match="pickle/zip|not a safetensors"):
            ebm_play.load_model(p)
    assert not (tmp_path / "pwned").exists()


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(EBMError, match="truncated|cannot read|not a valid"):
        ebm_play.load_model(saved)


def test_oversized_header(tmp_path):
    p = tmp_path / "big.safetensors"
    p.write_bytes(struct.pack("<Q", 2**40) + b"{" + b" " * 100)
    with pytest.raises(EBMError, match="header claims"):
        ebm_play.load_model(p)


def test_missing_extra_misshapen_and_bad_tensors(model, tmp_path):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    cases = {
        "missing tensor": {k: v for k, v in sd.items() if k != "head.bias"},
        "unexpected tensor": {**sd, "extra": torch.zeros(2)},
        "has shape": {**sd, "head.bias": torch.zeros(3)},
        "dtype": {**sd, "head.bias": torch.zeros(1, dtype=torch.int64)},
        "NaN or infinite": {**sd, "head.bias": torch.tensor([float("nan")])},
    }
    for msg, tensors in cases.items():
        p = write(tmp_path / "bad.safetensors", tensors, meta_of(model))
        with pytest.raises(EBMError, match=msg):
            ebm_play.load_model(p)


def test_ensemble_with_a_non_positive_scale_is_refused(tmp_path):
    m = JEMEnsemble(2, width=4)
    tensors = {**m.state_dict(), "scale": torch.tensor([1.0, 0.0])}
    with pytest.raises(EBMError, match="bad.safetensors: the members' scales must be positive"):
        ebm_play.load_model(write(tmp_path / "bad.safetensors", tensors, meta_of(m)))


@pytest.mark.parametrize("meta,msg", [
    (None, "no ebm_play metadata"), ("{not json", "not valid JSON"), ({"kind": "cnn"}, "'config' object"),
    ({"kind": "gan", "config": {}}, "unknown model kind"), ({"kind": "cnn", "config": {"width": "4; rm -rf /"}}, "config .width. must be a whole number"),
    ({"kind": "cnn", "config": {"width": 4, "depth": 9}}, "bad configuration"),
])
def test_bad_metadata_is_named(model, tmp_path, meta, msg):
    p = write(tmp_path / "bad.safetensors", dict(model.state_dict()), meta)
    with pytest.raises(EBMError, match=msg):
        ebm_play.load_model(p)


def test_crash_while_saving_leaves_the_previous_file_intact(model, saved, monkeypatch):
    before = saved.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(weights, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        ebm_play.save_model(model, saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


# --- checked before anything is built (issue #20) ---------------------------------------------------
DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
               torch.int8: "I8", torch.int64: "I64"}


def write_raw(path, tensors, meta_text):
    """A safetensors file written by hand, so that it can hold what safetensors' writer refuses:
    duplicate tensor names, any metadata text. ``tensors``: a list of (name, tensor)."""
    entries, chunks, offset = [], [], 0
    for name, t in tensors:
        data = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        entries.append(f"{json.dumps(name)}: " + json.dumps({"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                                                             "data_offsets": [offset, offset + len(data)]}))
        chunks.append(data)
        offset += len(data)
    if meta_text is not None:
        entries.insert(0, '"__metadata__": ' + json.dumps({"ebm_play": meta_text}))
    head = ("{" + ", ".join(entries) + "}").encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(chunks))
    return path


def one_line_refusal(path, limits=weights.FILE_LIMITS) -> str:
    with pytest.raises(EBMError) as e:
        ebm_play.load_model(path, limits=limits)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) <= 300 and msg.startswith(f"{path.name}: "), msg
    return msg


@pytest.fixture
def no_build(monkeypatch):
    """Fails the test if a model is built (or its tensors read) before the file is refused."""
    def boom(*a, **k):
        raise AssertionError("the model was built before the file was checked")

    monkeypatch.setattr(weights, "build_model", boom)
    monkeypatch.setattr(weights, "safe_open", boom)


TINY_TENSORS = [(k, v) for k, v in ebm_play.CNNEnergy(width=1).state_dict().items()]


@pytest.mark.parametrize("config,words", [
    # the memory cases: a 200-byte file used to allocate 2–4 GB
    ({"kind": "jem", "config": {"width": 256, "n_classes": 500000}}, "config 'n_classes' must be 2 to 10"),
    ({"kind": "rbm", "config": {"visible": 60000, "hidden": 8192}}, "config 'visible' must be 784"),
    ({"kind": "mlp2d", "config": {"hidden": 16000}}, "config 'hidden' must be 1 to 1024"),
    ({"kind": "mlp2d", "config": {"layers": 200000}}, "config 'layers' must be 1 to 16"),
    ({"kind": "classifier", "config": {"width": 3000}}, "config 'width' must be 1 to 64"),
    ({"kind": "jem-ensemble", "config": {"members": 16, "width": 256}}, "has 312,803,520 parameters, more than the 100,000,000 allowed"),
    ({"kind": "cnn", "config": {"width": 256}}, "has shape (1, 1, 5, 5), expected (256, 1, 5, 5)"),  # in bounds; other tensors
    # values that used to raise RuntimeError or load into something unusable
    ({"kind": "jem", "config": {"n_classes": -3}}, "config 'n_classes' must be 2 to 10"),
    ({"kind": "jem", "config": {"n_classes": 0}}, "config 'n_classes' must be 2 to 10"),
    ({"kind": "rbm", "config": {"visible": -5}}, "config 'visible' must be 784"),
    ({"kind": "rbm", "config": {"visible": 10}}, "config 'visible' must be 784"),
    ({"kind": "cnn", "config": {"width": 2.5}}, "config 'width' must be a whole number"),
    ({"kind": "cnn", "config": {"spectral_norm": 1}}, "config 'spectral_norm' must be true or false"),
    ({"kind": "cnn", "config": {"width": True}}, "config 'width' must be a whole number"),
    ({"kind": "cnn", "config": {"width": 10**400}}, "config 'width' must be 1 to 256"),
    ({"kind": "cnn", "config": {"width": [4]}}, "must be a whole number"),
    ({"kind": "cnn", "config": {}, "format": 2}, "file format 2"),
    ({"kind": ["cnn"], "config": {}}, "unknown model kind"),
])
def test_hostile_metadata_is_refused_before_any_allocation(tmp_path, no_build, config, words):
    p = write_raw(tmp_path / "evil.safetensors", TINY_TENSORS, json.dumps(config))
    assert words in one_line_refusal(p)


@pytest.mark.parametrize("samplers,words", [
    ({"langevin": [1, 2]}, "must be a mapping"),
    ({"langevin": {"temperature": "hot"}}, "temperature must be a number"),
    ({"ula": {"temperature": "hot"}}, "temperature must be a number"),
    ({"mala": {"step_size": float("nan")}}, "step_size must be a finite number"),
    ({"langevin": {"steps": 10**12}}, "steps must be between 0 and 100000"),
    ({"langevin": {"steps": 10**400}}, "steps must be between 0 and 100000"),
    ({"langevin": {"bounds": [1, -1]}}, "low < high"),
    ({"hmc": {"leapfrog": 2.5}}, "leapfrog must be a whole number"),
    ({"hmc": {"leapfrog": 10**6}}, "leapfrog must be between 1 and 1000"),
    ({"langevin": {"mask": [[1]]}}, "a stored recommendation cannot set 'mask'"),
    ({"langevin": {"data_weight": 1.0}}, "cannot set 'data_weight'"),
    ({"langevin": {"generator": None}}, "has no option 'generator'"),
    ({"annealed": {"base": "gibbs"}}, "needs a gradient sampler as base"),
    ({"metropolis": {}}, "unknown sampler 'metropolis'"),
    ([1, 2], "info 'samplers' must be an object"),
])
def test_stored_sampler_settings_go_through_the_samplers_validator(tmp_path, no_build, samplers, words):
    meta = {"kind": "cnn", "config": {"width": 1}, "info": {"samplers": samplers}}
    p = write_raw(tmp_path / "evil.safetensors", TINY_TENSORS, json.dumps(meta))
    msg = one_line_refusal(p)
    assert "stored sampler settings" in msg or "info" in msg
    assert words in msg


def test_stored_settings_are_normalised_and_used(tmp_path):
    meta = {"kind": "cnn", "config": {"width": 1}, "info": {"samplers": {"hmc": {"leapfrog": 3.0, "steps": 2.0}}}}
    m = ebm_play.load_model(write_raw(tmp_path / "ok.safetensors", TINY_TENSORS, json.dumps(meta)))
    assert m.info["samplers"] == {"hmc": {"leapfrog": 3, "steps": 2}}
    assert isinstance(m.info["samplers"]["hmc"]["leapfrog"], int)
    assert ebm_play.sample_chains(m, 2, sampler="hmc", seed=0).steps == [0, 1, 2]


@pytest.mark.parametrize("text,words", [
    ('{"kind": "cnn", "config": {"width": 1}, "info": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested 100001 levels deep"),
    ('{"kind": "cnn", "kind": "jem", "config": {"width": 1}}', "duplicate key 'kind'"),
    ('{"kind": "cnn", "config": {"width": 1, "width": 256}}', "duplicate key 'width'"),
    ('{"kind": "cnn", "config": {"width": ' + "9" * 5000 + "}}", "not valid JSON"),
    ('{"kind": "cnn", "config": {"width": 1}, "info": {"train_steps": "many"}}', "train_steps"),
])
def test_malformed_metadata_json(tmp_path, no_build, text, words):
    p = write_raw(tmp_path / "evil.safetensors", TINY_TENSORS, text)
    assert words in one_line_refusal(p)


def test_duplicate_tensor_names_are_refused(tmp_path, no_build):
    meta = json.dumps({"kind": "cnn", "config": {"width": 1}})
    p = write_raw(tmp_path / "dup.safetensors", TINY_TENSORS + [TINY_TENSORS[0]], meta)
    assert "duplicate key 'body.0.weight'" in one_line_refusal(p)


def test_tensor_types_shapes_and_byte_ranges_come_from_the_header(tmp_path, no_build):
    meta = json.dumps({"kind": "cnn", "config": {"width": 1}})
    int8 = [(k, v.to(torch.int8)) if k == "head.bias" else (k, v) for k, v in TINY_TENSORS]
    assert "has dtype 'I8', expected a float type" in one_line_refusal(write_raw(tmp_path / "i.safetensors", int8, meta))
    p = write_raw(tmp_path / "huge.safetensors", TINY_TENSORS, meta)
    raw = p.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8: 8 + n])
    header["head.bias"]["shape"] = [2**31, 2**31]  # 2^62 values in 4 bytes
    head = json.dumps(header).encode()
    p.write_bytes(struct.pack("<Q", len(head)) + head + raw[8 + n:])
    assert "'head.bias': its [2147483648, 2147483648] F32 values do not fit" in one_line_refusal(p)


def test_uploads_get_tighter_limits_than_files_a_user_chose(tmp_path):
    torch.manual_seed(0)
    p = ebm_play.save_model(ebm_play.CNNEnergy(width=160), tmp_path / "wide.safetensors")
    found = weights.inspect_file(p)
    assert found.params == sum(v.numel() for v in ebm_play.CNNEnergy(width=160).state_dict().values()) > 4_000_000
    assert found.nbytes == 4 * found.params and found.kind == "cnn" and found.config == {"width": 160, "spectral_norm": False}
    assert ebm_play.load_model(p).config["width"] == 160
    assert "more than the 4,000,000 allowed" in one_line_refusal(p, weights.UPLOAD_LIMITS)


def test_shipped_files_pass_the_upload_checks():
    for name in weights.shipped_models(energies_only=False):
        found = weights.inspect_file(weights.resolve(name), weights.UPLOAD_LIMITS)
        assert found.params <= 300_000 and found.metadata["kind"] == found.kind


def test_save_never_replaces_a_non_regular_file(model, tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    link = tmp_path / "null.safetensors"
    link.symlink_to("/dev/null")
    for target, what in ((fifo, "not a regular file"), (link, "a device"), (tmp_path, "a folder")):
        with pytest.raises(EBMError, match=what):
            ebm_play.save_model(model, target)
    assert link.is_symlink() and fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null.safetensors", "pipe.safetensors"]  # no temporary left


# --- generated files: refused in one line, or a model that samples ----------------------------------
SMALL = {kind: {f: rule if rule is bool else (rule[0], min(rule[1], rule[0] + 2)) for f, rule in fields.items()
                if rule is bool or isinstance(rule[0], int)}  # real numbers (noise ladders): the defaults
         for kind, fields in CONFIG_BOUNDS.items()}
ANY_VALUE = st.one_of(st.integers(-10**6, 10**6), st.just(10**400), st.floats(allow_nan=True, allow_infinity=True),
                      st.booleans(), st.none(), st.text(max_size=4), st.lists(st.integers(-3, 3), max_size=3),
                      st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
GOOD_OPTIONS = {  # values a recommendation may hold
    "steps": st.integers(0, 50), "step_size": st.floats(1e-4, 20), "noise": st.floats(0, 0.1),
    "temperature": st.floats(1e-3, 10), "grad_clamp": st.one_of(st.none(), st.floats(0, 1)), "leapfrog": st.integers(1, 4),
    "bounds": st.lists(st.floats(-2, 2), min_size=2, max_size=2, unique=True).map(sorted),
    "base": st.sampled_from(["ula", "mala", "hmc", "langevin"]), "t_start": st.floats(0.01, 100),
    "t_end": st.floats(0.01, 100), "wall": st.floats(0, 200), "adapt": st.one_of(st.none(), st.booleans()),
    "warmup": st.one_of(st.none(), st.integers(0, 20)), "burn_in": st.integers(0, 20),
    "target_accept": st.floats(0.05, 0.95), "sigma_max": st.one_of(st.none(), st.floats(0.5, 2)),
    "sigma_min": st.one_of(st.none(), st.floats(0.01, 0.1)), "levels": st.one_of(st.none(), st.integers(1, 5)),
    "final_denoise": st.booleans(),
}
BAD_OPTIONS = st.one_of(ANY_VALUE, st.sampled_from([float("nan"), float("inf"), -1.0, 0, 1e-300, 10**12, 10**400, 2.5, "1"]),
                        st.lists(st.one_of(st.floats(-2, 2), st.just(float("nan"))), max_size=3))


def _value(field_rule, data):
    if field_rule is bool:
        return data.draw(st.booleans())
    return data.draw(st.integers(*field_rule))


def _config(kind, data, fault: bool) -> tuple[dict, dict]:
    """(the config of the tensors written, the config the metadata claims)."""
    real = {f: _value(rule, data) for f, rule in SMALL[kind].items()}
    claimed = dict(real)
    if not fault:
        return real, claimed
    how = data.draw(st.sampled_from(["field", "range", "extra", "drop"]))
    name = data.draw(st.sampled_from(sorted(CONFIG_BOUNDS[kind] if how == "range" else real)))
    if how == "field":
        claimed[name] = data.draw(ANY_VALUE)
    elif how == "range":  # in or past the bounds: never matches the small tensors, never allocated
        rule = CONFIG_BOUNDS[kind][name]
        if rule is bool:
            claimed[name] = data.draw(st.booleans())
        elif isinstance(rule[0], float):
            claimed[name] = data.draw(st.floats(-1.0, rule[1] * 100))
        else:
            claimed[name] = data.draw(st.integers(rule[0] - 10, rule[1] * 100))
    elif how == "extra":
        claimed[data.draw(st.text(min_size=1, max_size=5))] = data.draw(ANY_VALUE)
    else:  # the constructor's default then applies
        del claimed[name]
    return real, claimed


def _samplers(data, fault: bool) -> dict:
    """Recommended settings: options the sampler takes with good values; with ``fault``, one of
    them (or the whole entry) is anything at all."""
    out = {}
    for name in data.draw(st.lists(st.sampled_from(list(SAMPLERS)), min_size=fault, max_size=3, unique=True)):
        own = sorted(set(ebm_play.samplers.sampler_options(name)) - {"generator", "mask", "x_obs", "data_weight"} | {"steps"})
        keys = data.draw(st.lists(st.sampled_from(own), max_size=3, unique=True))
        out[name] = {k: data.draw(GOOD_OPTIONS[k]) for k in keys}
    if fault:
        name = data.draw(st.sampled_from(sorted(out)))
        how = data.draw(st.sampled_from(["value", "value", "option", "entry", "sampler"]))
        if how == "value":
            out[name][data.draw(st.sampled_from(sorted(GOOD_OPTIONS)))] = data.draw(BAD_OPTIONS)
        elif how == "option":
            out[name][data.draw(st.sampled_from(["mask", "x_obs", "data_weight", "generator", "zzz"]))] = data.draw(ANY_VALUE)
        elif how == "entry":
            out[name] = data.draw(ANY_VALUE)
        else:
            out[data.draw(st.text(max_size=6))] = {}
    return out


def _tensors(model, data, fault: bool) -> list:
    items = [(k, v.detach().clone()) for k, v in model.state_dict().items()]
    if not fault:
        return items
    how = data.draw(st.sampled_from(["drop", "extra", "shape", "int", "nan", "f16", "dup"]))
    i = data.draw(st.integers(0, len(items) - 1))
    k, v = items[i]
    if how == "drop":
        del items[i]
    elif how == "extra":
        items.append(("extra", torch.zeros(2)))
    elif how == "shape":
        items[i] = (k, torch.zeros(v.numel() + 1))
    elif how == "int":
        items[i] = (k, v.to(torch.int64))
    elif how == "nan":
        items[i] = (k, torch.full_like(v, float("nan")))
    elif how == "f16":  # a float type: loads
        items[i] = (k, v.half())
    else:
        items.append(items[i])
    return items


def _metadata_text(meta: dict, data, fault: bool) -> str:
    how = data.draw(st.sampled_from(["deep", "dup", "garbage", "list", "format"])) if fault else "plain"
    if how == "deep":
        depth = data.draw(st.integers(1, 80))
        meta["info"] = {**meta["info"], "nested": json.loads("[" * depth + "]" * depth)}
    if how == "format":
        meta["format"] = data.draw(st.sampled_from([2, "1", None, 1.5]))
    text = json.dumps(meta)
    if how == "dup":
        return '{"kind": "cnn", ' + text[1:]
    if how == "garbage":
        return text[: data.draw(st.integers(0, len(text) - 1))]
    return "[" + text + "]" if how == "list" else text


def _samples(model) -> None:
    """Use every sampler the file recommends, as the app would after loading it."""
    stored = model.info.get("samplers", {})
    if model.kind == "classifier":
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, model.config.get("n_classes", 10))
        return
    names = {"langevin", *stored} & set(ebm_play.settings.applicable(model))
    for name in sorted(names):
        if model.kind in ("mlp2d", "mlp2d-noise"):
            opts = {k: v for k, v in stored.get(name, {}).items() if k != "steps"}
            ebm_play.samplers.run(name, model, torch.zeros(2, 2), 2, seed=0, **opts)
        else:
            assert ebm_play.sample(model, n=2, steps=2, sampler=name, seed=0).shape == (2, 1, 28, 28)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_generated_files_are_refused_in_one_line_or_load_into_a_model_that_samples(data):
    kind = data.draw(st.sampled_from(sorted(MODEL_KINDS)))
    fault = data.draw(st.sampled_from(["none", "config", "tensors", "metadata", "samplers", "train_steps"]))
    real, claimed = _config(kind, data, fault == "config")
    torch.manual_seed(0)
    tensors = _tensors(build_model(kind, **real), data, fault == "tensors")
    meta = {"format": 1, "kind": kind, "config": claimed, "info": {"samplers": _samplers(data, fault == "samplers")}}
    if fault == "train_steps":
        meta["info"]["train_steps"] = data.draw(ANY_VALUE)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_raw(Path(tmp) / "gen.safetensors", tensors, _metadata_text(meta, data, fault == "metadata"))
        try:
            model = ebm_play.load_model(path)
        except EBMError as e:
            msg = str(e)
            assert "\n" not in msg and len(msg) <= 300 and msg.startswith("gen.safetensors: "), msg
            event(f"{fault}: refused")
            return
    event(f"{fault}: loaded")
    _samples(model)
