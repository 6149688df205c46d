import io
import zipfile

import torch

import ebm_play


def test_bundled_sample_is_real_mnist_in_model_format():
    train, test = ebm_play.sample_digits(True), ebm_play.sample_digits(False)
    assert train.x.shape == (8000, 1, 28, 28) and test.x.shape == (2000, 1, 28, 28)
    assert train.x.min() == -1 and train.x.max() == 1
    assert torch.bincount(train.y, minlength=10).min() > 600  # every digit is there
    assert abs(((train.x + 1) / 2).mean().item() - 0.13) < 0.01  # MNIST's mean ink


def test_missing_mnist_falls_back_to_the_bundled_sample(tmp_path):
    d = ebm_play.mnist(root=tmp_path / "nowhere", train=False, classes=[1, 7], limit=50)
    assert "bundled" in d.source and len(d.x) == 50 and set(d.y.tolist()) <= {1, 7}


# --- data a person brings (tests/owndata.py makes it: three labels of generated glyphs) -----------
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from owndata import LABELS, glyph_arrays, make_folder, make_npz, make_torchvision_root, make_zip  # noqa: E402

from ebm_play.archives import Limits  # noqa: E402
from ebm_play.data import BUNDLED, HELD_OUT, dataset_of, load_dataset, model_for, source_kind, split_indices  # noqa: E402
from ebm_play.errors import EBMError  # noqa: E402


def check_split(d, per_class: int):
    """Every class holds out round(10%) of its images, at least one, and keeps the rest."""
    held = max(1, round(HELD_OUT * per_class))
    assert d.counts() == {c: (per_class - held, held) for c in d.classes}
    assert d.size == per_class * len(d.classes)


def test_folder_labels_from_sub_folders(tmp_path):
    d = load_dataset(make_folder(tmp_path / "glyphs"), labels_from_folders=True)
    assert d.classes == list(LABELS) and d.labelled and d.name == "glyphs"
    check_split(d, 6)
    assert d.train.x.shape == (15, 1, 28, 28) and d.train.x.min() >= -1 and d.train.x.max() <= 1
    # pictures go through the drawings' preprocessing: the same tensors as preprocess() gives
    x, y = glyph_arrays()
    assert np.array_equal(np.sort(ebm_play.images.to_uint8(torch.cat([d.train.x, d.test.x])).reshape(18, -1), 0),
                          np.sort(x.reshape(18, -1), 0))
    unlabelled = load_dataset(tmp_path / "glyphs")
    assert not unlabelled.labelled and unlabelled.classes == [] and unlabelled.counts() == {"all": (16, 2)}


def test_zip_and_folder_of_the_same_pictures_are_the_same_data(tmp_path):
    folder = load_dataset(make_folder(tmp_path / "glyphs"), labels_from_folders=True)
    z = load_dataset(make_zip(tmp_path / "glyphs.zip"), labels_from_folders=True)
    assert z.hash == folder.hash and torch.equal(z.train.x, folder.train.x) and torch.equal(z.test.y, folder.test.y)
    assert sorted(z.skipped) == ["__MACOSX/glyphs/._x.png", "glyphs/.DS_Store"]  # junk is skipped, not refused
    assert "glyphs.zip" in z.summary() and z.hash[:12] in z.summary()


def test_npz_with_labels_and_names(tmp_path):
    d = load_dataset(make_npz(tmp_path / "g.npz"))
    assert d.classes == ["0", "1", "2"]
    check_split(d, 6)
    x, y = glyph_arrays()
    named = load_dataset(make_npz(tmp_path / "n.npz", y=np.array(LABELS)[y]))  # labels given as names
    assert named.classes == list(LABELS) and named.hash != d.hash
    listed = load_dataset(make_npz(tmp_path / "c.npz", classes=np.array(LABELS)))
    assert listed.classes == list(LABELS)
    # float [0, 1] and N×1×28×28 read as the same images as uint8
    f = load_dataset(make_npz(tmp_path / "f.npz", x=(x / 255.0).reshape(18, 1, 28, 28)))
    assert torch.allclose(f.train.x, d.train.x, atol=1e-6)
    np.savez(tmp_path / "x.npz", x=x)
    bare = load_dataset(tmp_path / "x.npz")
    assert not bare.labelled and bare.size == 18


@pytest.mark.parametrize("case, arrays, words", [
    ("wrong shape", {"x": np.zeros((4, 32, 32), np.uint8)}, ["N×28×28"]),
    ("no x", {"images": np.zeros((4, 28, 28), np.uint8)}, ["no array 'x'"]),
    ("objects", {"x": np.full((4, 28, 28), None, dtype=object)}, ["numbers"]),
    ("NaN", {"x": np.full((4, 28, 28), np.nan)}, ["NaN"]),
    ("range", {"x": np.full((4, 28, 28), 300.0)}, ["[0, 255]"]),
    ("blank", {"x": np.zeros((4, 28, 28), np.uint8)}, ["one colour"]),
    ("labels", {"x": glyph_arrays()[0], "y": np.arange(5)}, ["one label per image"]),
    ("classes", {"x": glyph_arrays()[0], "y": np.full(18, 7), "classes": np.array(LABELS)}, ["from 0 to 2"]),
])
def test_npz_mistakes_are_one_line(tmp_path, case, arrays, words):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(EBMError) as e:
        load_dataset(p)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_npz_sizes_are_read_from_the_header_before_the_array(tmp_path):
    """An .npz whose x claims 10⁹ images is refused from its 128-byte header, nothing allocated."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 28, 28), np.uint8))
    header["shape"] = (10**9, 28, 28)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    p = tmp_path / "bomb.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x.npy", buf.getvalue() + b"\0" * 784)
    with pytest.raises(EBMError, match="1,000,000,000 images, over the limit"):
        load_dataset(p)


@pytest.mark.parametrize("folder, prefix, offset, name", [
    ("FashionMNIST", "", 0, "fashion-mnist"), ("KMNIST", "", 0, "kmnist"),
    ("EMNIST", "emnist-letters-", 1, "emnist-letters")])
def test_torchvision_sets_by_name_from_a_local_root(tmp_path, folder, prefix, offset, name):
    root = make_torchvision_root(tmp_path, folder, prefix=prefix, label_offset=offset)
    d = load_dataset(name, root=root)
    assert d.split == "the official test split" and (len(d.train.x), len(d.test.x)) == (12, 6)
    assert len(d.classes) == 3 and d.train.y.max() == 2  # labels made 0..K−1 (EMNIST letters count from 1)
    if name == "emnist-letters":
        assert d.classes == ["a", "b", "c"]
    x, _ = glyph_arrays()
    assert np.array_equal(ebm_play.images.to_uint8(d.train.x[:1])[0], x[0])  # EMNIST's transposition undone
    with pytest.raises(EBMError, match="not found under"):
        load_dataset(name, root=tmp_path / "empty")


def test_what_data_names(tmp_path):
    (tmp_path / "mnistroot" / "MNIST" / "raw").mkdir(parents=True)
    assert source_kind(tmp_path / "mnistroot") == "mnist"  # the documented `--data ROOT` still means MNIST
    assert source_kind("nowhere") == "mnist" and source_kind(None) == "mnist"  # torchvision may download there
    make_torchvision_root(tmp_path / "tv", "KMNIST")
    with pytest.raises(EBMError, match="is a torchvision root; name a set in it: --data kmnist --data-root"):
        source_kind(tmp_path / "tv")
    assert source_kind("glyphs") == "bundled" and source_kind("kmnist") == "torchvision"
    with pytest.raises(EBMError, match="no such file"):
        source_kind(tmp_path / "typo.zip")
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(EBMError, match="not a data file"):
        source_kind(tmp_path / "a.png")
    with pytest.raises(EBMError, match="expected zip or npz"):
        load_dataset("glyphs", kinds=("zip", "npz"))  # an app's upload is never a name


def test_bundled_glyphs_are_small_and_complete():
    assert BUNDLED["glyphs"].stat().st_size < 1_000_000
    d = load_dataset("glyphs")
    assert d.size == 4000 and len(d.classes) == 8 and "heart" in d.classes
    assert all(counts == (450, 50) for counts in d.counts().values())
    assert d.hash == load_dataset("glyphs").hash  # the split and hash are deterministic
    assert abs(((d.train.x + 1) / 2).mean().item() - 0.19) < 0.05  # symbols carry more ink than digits


def test_split_is_stratified_and_keeps_one_of_each():
    y = torch.tensor([0] * 10 + [1] * 2 + [2])
    tr, te = split_indices(len(y), y, 0.3)
    assert sorted(y[te].tolist()) == [0, 0, 0, 1] and sorted(y[tr].tolist()) == [0] * 7 + [1, 2]


def test_preview_interleaves_classes_and_jem_checks(tmp_path):
    d = load_dataset(make_folder(tmp_path / "g"), labels_from_folders=True)
    first = d.preview(6)
    assert first.shape == (6, 1, 28, 28)
    assert [int(d.train.y[(d.train.x == img).flatten(1).all(1)][0]) for img in first] == [0, 1, 2, 0, 1, 2]
    model = model_for(ebm_play.TrainConfig(model="jem", width=4), d)
    assert model.config["n_classes"] == 3
    with pytest.raises(EBMError, match="JEM needs labels"):
        load_dataset(tmp_path / "g").check_trainable("jem")
    with pytest.raises(EBMError, match="MNIST digits only"):
        d.check_trainable("cnn", mirrored=0.25)
    one = tmp_path / "one"
    make_folder(one)
    for f in sorted((one / "ring").iterdir())[1:]:
        f.unlink()
    with pytest.raises(EBMError, match="at least 2 images per class.*'ring' has 1"):
        load_dataset(one, labels_from_folders=True).check_trainable("jem")


def test_a_weights_file_finds_its_data_again_by_name_not_by_path(tmp_path):
    glyphs = load_dataset("glyphs")
    assert dataset_of({"dataset": glyphs.info()}).hash == glyphs.hash
    folder = load_dataset(make_folder(tmp_path / "g"), labels_from_folders=True)
    assert dataset_of({"dataset": folder.info()}) is None  # a path in a file is not followed …
    assert dataset_of({"dataset": folder.info()}, allow_paths=True).hash == folder.hash  # … unless allowed
    assert dataset_of({"dataset": {**glyphs.info(), "hash": "0" * 64}}) is None  # other content: not it
    assert dataset_of({"data": "MNIST train"}) is None


def test_limits_count_images(tmp_path):
    with pytest.raises(EBMError, match="18 images, over the limit of 10"):
        load_dataset(make_folder(tmp_path / "g"), Limits(max_images=10))


# --- 2-D points from CSV (the Landscape tab's upload) ------------------------------------------
from ebm_play.data import points_csv, points_from_csv  # noqa: E402


def test_csv_points_inside_the_square_are_kept_and_round_trip():
    x = torch.tensor([[-0.5, 0.25], [0.9, -0.95], [0.0, 1.0]])
    d = points_from_csv(points_csv(x).encode())
    assert torch.equal(d.train.x, x) and d.unit == "points" and len(d.test.x) == 0
    assert "3 points" in d.summary() and "held out" in d.summary()


@pytest.mark.parametrize("text", ["x,y\n10,0\n30,10\n20,5\n", "10;0\n30;10\n# a comment\n\n20;5\n",
                                  "id\ty\tx\n1\t0\t10\n2\t10\t30\n3\t5\t20\n", "10 0\n30 10\n20 5\n"])
def test_csv_dialects_and_scaling_into_the_square(text):
    d = points_from_csv(text.encode())
    # x spans 10..30 (half-range 10), y 0..10: one factor 0.95/10 keeps the shape, centred on (20, 5)
    assert torch.allclose(d.train.x, torch.tensor([[-0.95, -0.475], [0.95, 0.475], [0.0, 0.0]]), atol=1e-6)
    assert "scaled by 0.095" in d.source


@pytest.mark.parametrize("data, kw, words", [
    (b"x,y\n1,2\n3,oops\n", {}, "row 3: expected two numbers"),
    (b"x,y\n1\n", {}, "row 2"),
    (b"x,y\n", {}, "a header but no points"),
    (b"\n# nothing\n", {}, "no points"),
    (b"1,nan\n2,3\n", {}, "NaN or infinite"),
    (b"5,5\n5,5\n", {}, "every point is the same"),
    (b"\xff\xfe1,2\n", {}, "not UTF-8"),
    (b"1,2\n" * 11, {"max_points": 10}, "11 points, over 10"),
    (b"1,2\n" * 100, {"max_bytes": 50}, "over the"),
])
def test_csv_mistakes_are_one_line(data, kw, words):
    with pytest.raises(EBMError) as e:
        points_from_csv(data, **kw)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_csv_file_and_named_point_sets(tmp_path):
    (tmp_path / "p.csv").write_text("x,y\n0.1,0.2\n0.3,0.4\n")
    d = load_dataset(tmp_path / "p.csv")
    assert d.name == "p.csv" and d.arg == str(tmp_path / "p.csv") and d.size == 2
    moons = load_dataset("two_moons")
    assert moons.train.x.shape == (2000, 2) and moons.hash == load_dataset("two_moons").hash
