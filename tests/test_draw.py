"""ui.draw on its own (no server): what the drawing tabs read from pads and API callers, the masks
they paint, the panel's endpoints and the page variants of the run endpoints."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import ebm_play
from ebm_play import EBMError, masks
from ui import draw

TEST = ebm_play.sample_digits(train=False)


def png(tmp_path, name: str, img: Image.Image):
    p = tmp_path / name
    img.save(p)
    return p


def editor(path=None, layers=()) -> dict:
    """An image-editor value as gradio hands it to an endpoint: file data with checked paths."""
    return {"background": None if path is None else {"path": str(path)}, "layers": [{"path": str(p)} for p in layers],
            "composite": None, "id": None}


def test_a_picture_wins_over_the_test_digit_and_a_black_pad_counts_as_empty(tmp_path):
    one = Image.new("L", (200, 200))
    one.paste(255, (90, 30, 110, 170))
    x, source = draw.model_input(editor(png(tmp_path, "one.png", one)), 0)
    assert source == "your drawing" and x.shape == (1, 1, 28, 28) and x.max() == 1
    assert torch.equal(draw.model_input(None, 4)[0], TEST.x[4:5])  # a test digit exactly, not re-preprocessed
    assert draw.model_input(editor(png(tmp_path, "black.png", Image.new("L", (280, 280)))), 4)[1] == "test digit #4 (a 4)"
    assert draw.model_input(one, None)[1] == "your drawing"  # a pad's picture (read by draw.Pad)
    with pytest.raises(EBMError, match="drawing is empty"):
        draw.model_input(None, None)
    stroke = Image.new("RGBA", (280, 280), (0, 0, 0, 0))  # the same bar on a transparent layer: the same input
    stroke.paste((255, 255, 255, 255), (130, 40, 150, 180))
    assert torch.equal(draw.model_input(editor(layers=[png(tmp_path, "layer.png", stroke)]), None)[0], x)


def test_pads_are_read_only_as_data_urls_and_bare_paths_never_opened(tmp_path):
    pic = draw.enlarge(TEST.x[3:4])
    assert draw.pad_picture("") is None and draw.pad_picture(draw.data_url(pic)).size == pic.size
    path = png(tmp_path, "three.png", pic)
    # page events take the pad raw: a path or a file dict sent to them by hand is refused, never opened
    for bad in (str(path), {"path": str(path)}, "data:text/plain;base64,aGk=", "data:image/png;base64,%%%"):
        with pytest.raises(EBMError):
            draw.Pad()("drawing", bad)
    with pytest.raises(EBMError, match="larger than"):
        draw.pad_picture("data:image/png;base64," + "A" * (draw.MAX_UPLOAD_BYTES * 4 // 3 + 8))
    with pytest.raises(EBMError, match="expected an uploaded picture"):  # nor inside an editor value
        draw.model_input({"background": str(path), "layers": [], "composite": None}, None)


def test_blobs_a_page_editor_uploaded_are_taken_once_and_bounded(tmp_path):
    import gradio as gr
    from gradio.components.image_editor import EditorDataBlobs

    pad = gr.ImageEditor(render=False)
    pad.blob_storage["abc"] = EditorDataBlobs(background=None, layers=[b"x"], composite=None)
    with pytest.raises(EBMError, match="not an image"):
        draw.editor_parts(pad, {"id": "abc", "background": None, "layers": [], "composite": None})
    assert "abc" not in pad.blob_storage
    for i in range(draw.MAX_BLOBS + 50):
        pad.blob_storage[f"old{i}"] = EditorDataBlobs(background=None, layers=[], composite=None)
    draw.editor_parts(pad, {"id": "gone", "background": None, "layers": [], "composite": None})
    assert len(pad.blob_storage) == draw.MAX_BLOBS and f"old{draw.MAX_BLOBS + 49}" in pad.blob_storage


def test_painted_masks_follow_the_engine_convention(tmp_path):
    keep_top = masks.keep_half("top")  # 1 = keep: the top half stays, the bottom is filled
    layer = draw.mask_layer(keep_top)
    assert torch.equal(draw.mask_keep(layer), keep_top)  # a mask pad's picture is its paint layer
    assert torch.equal(draw.mask_keep(editor(layers=[png(tmp_path, "m.png", layer)])), keep_top)
    opaque = Image.new("RGB", (56, 56), "black")
    opaque.paste((255, 255, 255), (0, 28, 56, 56))  # white = paint = erase: the bottom half
    assert torch.equal(draw.mask_keep(editor(layers=[png(tmp_path, "o.png", opaque)])), keep_top)
    for empty in (None, editor(), Image.new("RGBA", (280, 280))):
        with pytest.raises(EBMError, match="no mask|mask is empty"):
            draw.mask_keep(empty)


def test_the_panel_shows_what_the_model_sees(pg):
    one = draw.enlarge(TEST.x[2:3])
    digit, preview, note = draw.drawn(pg, draw.data_url(one), 5)
    assert digit is None and preview.endswith(".png") and "your drawing" in note  # a stroke clears the digit field
    digit, preview, note, mask = draw.drawn(pg, draw.data_url(one), None, True)
    assert mask.props["background"].startswith("data:image/png;base64,") and "value" not in mask.props  # strokes stay
    black = draw.data_url(Image.new("L", (280, 280)))
    for cleared in ("", black):  # an empty pad leaves the picked digit
        skip, preview, note = draw.drawn(pg, cleared, 7)
        assert "test digit #7" in note and preview
    assert draw.drawn(pg, "", None)[2] == draw.HINT
    pad, preview, note = draw.picked(pg, 9)
    assert pad == draw.EMPTY and "test digit #9 (a 9)" in note.replace("*", "")
    pad, i, preview, note, mask = draw.random_digit(pg, True)
    assert pad == draw.EMPTY and 0 <= i < 2000 and f"#{i}" in note
    with pytest.raises(EBMError, match="test digit must be between 0 and 1999"):
        draw.picked(pg, 2000)


def test_page_variants_swap_only_the_declared_specs():
    @draw.endpoint(image=draw.Picture(), steps=draw.Whole(0, 10, optional=True))
    def run(pg, image=None, steps=None):
        return image, steps

    page = draw.page_twin(run, image=draw.Pad(), steps=draw.ZeroIsDefault(run.specs["steps"]))
    assert page.__name__ == "run_page" and run(None, None, 0) == (None, 0)  # the API: 0 steps is 0 steps
    assert page(None, "", 0) == (None, None) and page(None, "", 3) == (None, 3)  # the page: 0 is the default
    with pytest.raises(EBMError):
        page(None, {"path": "/etc/passwd"})


def test_results_are_rounded_for_people_and_json():
    assert draw.tidy({"a": 0.027048498392105103, "b": [1.23456789e-9, float("nan")], "c": "x", "d": 3}) == \
        {"a": 0.0270485, "b": [1.23457e-09, None], "c": "x", "d": 3}


def test_knobs_left_alone_leave_the_engine_its_defaults():
    model = ebm_play.load_model("mnist")
    chosen = ebm_play.settings.resolve(model, "langevin", None, step_size=None)
    assert draw.given({"step_size": None, "noise": None}, chosen) == {}
    changed = ebm_play.settings.resolve(model, "langevin", None, step_size=2.5)
    assert draw.given({"step_size": 2.5}, changed) == {**chosen.options, "step_size": 2.5}
    assert draw.KNOB_SPECS["noise"]("noise", 0) is None  # an empty field (shown as 0) keeps the model's own
