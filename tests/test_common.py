"""What the tabs share: pictures written once, numbers for people, and the one gradio patch that stays."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from ui import common


def test_a_picture_is_written_once_atomically_into_gradios_cache():
    from gradio.utils import get_upload_folder

    img = Image.fromarray((np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28))
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(common.picture(img))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 1 and Path(paths[0]).is_relative_to(get_upload_folder())
    with Image.open(paths[0]) as back:
        assert np.array_equal(np.asarray(back), np.asarray(img))
    assert not list(Path(paths[0]).parent.glob(".picture.*"))  # no staging files left


def test_numbers_are_rounded_for_people():
    assert common.fmt(0.027048498392105103) == "0.02705" and common.fmt(12345) == "12,345"
    assert common.fmt(None) == "–" and common.fmt(float("nan")) == "nan" and common.fmt(3.0) == "3"


def test_the_session_patch_still_matches_gradio():
    """gradio's SessionState renders every block's configuration per session; the patch hands it an
    app without blocks. This fails loudly when the installed gradio reads more than the patch gives
    it, or no longer builds a configuration on demand where it needs one."""
    from gradio.state_holder import SessionState

    common.patch_gradio_sessions()
    with gr.Blocks() as demo:
        box = gr.Textbox("hello")
        gr.Button().click(lambda s: s, box, box)
    init = SessionState.__init__
    before = init.fallbacks
    state = SessionState(demo)
    assert init.lazy and init.fallbacks == before, "the patch fell back: gradio's constructor changed"
    assert state.config_values == {}  # nothing rendered up front
    state._update_value_in_config(box._id, "changed")  # what a request does with an input's value
    assert state.config_values[box._id]["props"]["value"] == "changed"
    assert state[box._id] is box  # blocks are still found through the session's copy of the config


def test_live_pictures_cannot_fill_the_disk(monkeypatch):
    monkeypatch.setattr(common, "MAX_PICTURE_BYTES", 20_000)
    paths = [common.picture(Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40), np.uint8)))
             for i in range(20)]  # ~1.7 kB each, 34 kB in all
    kept = [p for p in paths if Path(p).exists()]
    assert paths[-1] in kept and paths[0] not in kept and sum(Path(p).stat().st_size for p in kept) <= 20_000
