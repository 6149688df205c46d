import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

import ebm_play
from ebm_play import weights
from ebm_play.errors import EBMError
from ebm_play.models import JEMEnsemble


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
    ({"kind": "gan", "config": {}}, "unknown model kind"), ({"kind": "cnn", "config": {"width": "4; rm -rf /"}}, "finite number"),
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
