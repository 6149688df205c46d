"""Pictures and files of recorded chains: crisp grids, GIF, MP4, PNG and .npz that the engine reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_recording import fake_recording

import ebm_play
from ebm_play import media, recording


def test_recorder_and_every_export_format(tmp_path):
    rec = fake_recording(steps=20, chains=4, frames=6)
    assert rec.frame_at == recording.frame_steps(20, 6) and len(rec.steps) == 21 and len(rec.accept) == 20
    files = media.write_all(rec, tmp_path, fps=5, stem="t")
    with Image.open(files["gif"]) as im:
        assert im.n_frames == 6 and im.info["loop"] == 0
        assert im.size[0] > 28
    with Image.open(files["png"]) as png:
        assert png.size == media.chain_grid(rec.x).size
        a = np.asarray(png)
        assert set(np.unique(a[:, :])) <= set(range(256))  # greyscale, lossless
    with np.load(files["npz"]) as z:
        assert z["x"].shape == (4, 1, 28, 28) and z["frames"].shape == (6, 4, 1, 28, 28)
        assert list(z["frame_steps"]) == rec.frame_at and z["energies"].shape == (21, 4)
        assert ebm_play.load_images(files["npz"]).shape == (4, 1, 28, 28)  # the engine reads it back
    if media.video_available():
        import av

        with av.open(str(files["mp4"])) as c:
            n = sum(1 for _ in c.decode(video=0))
        assert n == 6
    else:
        assert files["mp4"] is None


def test_grids_are_crisp_nearest_neighbour():
    x = -torch.ones((1, 1, 28, 28))
    x[0, 0, 10, 10] = 1.0
    img = np.asarray(media.chain_grid(x))
    assert set(np.unique(img)) <= {0, 64, 255}  # no interpolated greys: background, padding, ink




def test_export_writes_once_per_recording_and_fps_and_forgets_dropped_ones(tmp_path):
    store = recording.RecordStore(max_items=1)
    rec = fake_recording(steps=6, chains=2, frames=4)
    store.put(rec)
    files = media.export(store, rec.id, tmp_path, 5)
    assert set(files) == {"gif", "mp4", "png", "npz"} and Path(files["gif"]).parent.name == "fps5"
    stamp = Path(files["npz"]).stat().st_mtime_ns
    assert media.export(store, rec.id, tmp_path, 5) == files and Path(files["npz"]).stat().st_mtime_ns == stamp
    other = fake_recording(steps=3, chains=1, frames=2)
    store.put(other)  # the first recording is dropped: its files go with the next export
    media.export(store, other.id, tmp_path, 5)
    assert not (tmp_path / rec.id).exists()
    with pytest.raises(ebm_play.EBMError, match="unknown or expired recording"):
        media.export(store, rec.id, tmp_path, 5)
    with pytest.raises(ebm_play.EBMError, match="frames per second must be between 1 and 60"):
        media.export(store, other.id, tmp_path, 0)
