"""One mask convention everywhere: 1 = keep."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from ebm_play import EBMError, masks


@pytest.mark.parametrize("which,rows,cols", [("top", slice(0, 14), slice(None)), ("bottom", slice(14, 28), slice(None)),
                                             ("left", slice(None), slice(0, 14)), ("right", slice(None), slice(14, 28))])
def test_keep_half_keeps_that_half(which, rows, cols):
    keep = masks.keep_half(which)
    assert keep.shape == (1, 1, 28, 28) and keep.sum() == 392
    assert (keep[0, 0][rows, cols] == 1).all()
    assert torch.equal(keep + masks.keep_half(masks.opposite(which)), torch.ones(1, 1, 28, 28))


def test_files_arrays_and_paint_agree_on_the_convention(tmp_path):
    bright_top = np.zeros((28, 28), np.uint8)
    bright_top[:14] = 255
    Image.fromarray(bright_top).resize((280, 280), Image.NEAREST).save(tmp_path / "m.png")
    np.savez(tmp_path / "m.npz", mask=bright_top / 255.0)
    assert torch.equal(masks.from_file(tmp_path / "m.png"), masks.keep_half("top"))
    assert torch.equal(masks.from_file(tmp_path / "m.npz"), masks.keep_half("top"))
    layer = Image.new("RGBA", (280, 280), (0, 0, 0, 0))  # paint over the bottom half: erase it, keep the top
    ImageDraw.Draw(layer).rectangle((0, 140, 279, 279), fill=(239, 68, 68, 200))
    assert torch.equal(masks.from_paint([layer]), masks.keep_half("top"))


@pytest.mark.parametrize("call,msg", [(lambda: masks.keep_half("middle"), "unknown half"),
                                      (lambda: masks.from_array(np.zeros(10)), "28×28"),
                                      (lambda: masks.from_array(np.full((28, 28), np.nan)), "NaN"),
                                      (lambda: masks.from_paint([]), "no mask"),
                                      (lambda: masks.from_paint([Image.new("RGBA", (28, 28), (0, 0, 0, 0))]), "empty")])
def test_bad_masks_get_one_line(call, msg):
    with pytest.raises(EBMError, match=msg):
        call()
