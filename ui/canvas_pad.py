"""A drawing pad built on ``gr.HTML`` (a plain 2-D <canvas> and a few lines of JS).

Why not ``gr.ImageEditor``: in Gradio 6 the page calls a component's ``get_data()`` on every
loading-status change of every event once the component has been an input of any finished event,
and the ImageEditor's ``get_data()`` re-exports its canvas and uploads background, layers and
composite each time (issue #21). This pad's value is a PNG data URL string: reading it is free,
and an event that needs the drawing carries it inline (a few KB), with no upload at all.

Value: ``""`` (an empty pad) or ``"data:image/png;base64,…"`` (the CANVAS×CANVAS picture; for a
mask pad, the RGBA mask layer alone). The ``background`` prop (a data URL) is shown under a
mask pad's strokes. ``trigger('input')`` fires once per finished stroke, upload or clear.
"""

from __future__ import annotations

import base64
import binascii
import io

import gradio as gr
from PIL import Image

from ebm_play import EBMError
from ebm_play.images import open_image

HTML = """
<div class="ebm-cpad">
  <canvas width="${size}" height="${size}" style="${background ? `background-image: url('${background}')` : ''}"></canvas>
  <div class="ebm-cpad-tools">
    <button type="button" data-tool="brush" class="on">Brush</button>
    <button type="button" data-tool="eraser">Eraser</button>
    <button type="button" data-act="undo">Undo</button>
    <button type="button" data-act="clear">Clear</button>
    <label class="ebm-cpad-up">Upload<input type="file" accept="image/png,image/jpeg,image/gif,image/webp" hidden></label>
  </div>
</div>
"""

CSS = """
.ebm-cpad canvas { width: 100%; max-width: ${size}px; aspect-ratio: 1; touch-action: none; cursor: crosshair;
  background-size: 100% 100%; image-rendering: pixelated; border: 1px solid var(--border-color-primary); }
.ebm-cpad-tools { display: flex; gap: 4px; margin-top: 4px; flex-wrap: wrap; }
.ebm-cpad-tools button, .ebm-cpad-up { padding: 2px 8px; border: 1px solid var(--border-color-primary);
  border-radius: 4px; font-size: 0.85em; cursor: pointer; background: var(--background-fill-secondary); }
.ebm-cpad-tools .on { background: var(--color-accent-soft); }
"""

JS = """
const cv = element.querySelector('canvas'), ctx = cv.getContext('2d', {willReadFrequently: false});
const N = cv.width, mask = props.mask === true;
let tool = 'brush', down = false, shown = props.value, undo = [];
const ink = () => tool === 'eraser' ? (mask ? 'rgba(0,0,0,1)' : '#000') : props.color;
function blank() {
  ctx.globalCompositeOperation = 'source-over';
  if (mask) ctx.clearRect(0, 0, N, N); else { ctx.fillStyle = '#000'; ctx.fillRect(0, 0, N, N); }
}
function paint(v) {  // the server's value (or the initial one) onto the canvas
  blank();
  if (!v) return;
  const img = new Image();
  img.onload = () => { blank(); ctx.drawImage(img, 0, 0, N, N); };
  img.src = v;
}
function commit() {  // one event per finished stroke: the canvas as a PNG data URL
  shown = cv.toDataURL('image/png');
  props.value = shown;
  trigger('input');
}
function at(e) { const r = cv.getBoundingClientRect(); return [(e.clientX - r.left) * N / r.width, (e.clientY - r.top) * N / r.height]; }
cv.addEventListener('pointerdown', e => {
  down = true; cv.setPointerCapture(e.pointerId);
  undo.push(ctx.getImageData(0, 0, N, N)); if (undo.length > 20) undo.shift();
  ctx.globalCompositeOperation = (mask && tool === 'eraser') ? 'destination-out' : 'source-over';
  ctx.lineCap = 'round'; ctx.lineJoin = 'round'; ctx.strokeStyle = ink();
  ctx.lineWidth = tool === 'eraser' ? props.brush + 4 : props.brush;
  const [x, y] = at(e); ctx.beginPath(); ctx.moveTo(x, y); ctx.lineTo(x + 0.01, y); ctx.stroke();
});
cv.addEventListener('pointermove', e => { if (!down) return; const [x, y] = at(e); ctx.lineTo(x, y); ctx.stroke(); });
const end = () => { if (!down) return; down = false; ctx.globalCompositeOperation = 'source-over'; commit(); };
cv.addEventListener('pointerup', end); cv.addEventListener('pointercancel', end);
element.querySelectorAll('[data-tool]').forEach(b => b.addEventListener('click', () => {
  tool = b.dataset.tool;
  element.querySelectorAll('[data-tool]').forEach(o => o.classList.toggle('on', o === b));
}));
element.querySelector('[data-act=undo]').addEventListener('click', () => {
  const last = undo.pop(); if (!last) return; ctx.putImageData(last, 0, 0); commit();
});
element.querySelector('[data-act=clear]').addEventListener('click', () => {
  undo.push(ctx.getImageData(0, 0, N, N)); blank(); shown = ''; props.value = ''; trigger('input');
});
element.querySelector('input[type=file]').addEventListener('change', ev => {
  const f = ev.target.files && ev.target.files[0]; ev.target.value = '';
  if (!f || f.size > props.max_bytes) return;
  const url = URL.createObjectURL(f), img = new Image();
  img.onload = () => {  // drawn scaled into the square (the server sees a CANVAS×CANVAS PNG)
    URL.revokeObjectURL(url); undo.push(ctx.getImageData(0, 0, N, N)); blank();
    const s = Math.min(N / img.width, N / img.height), w = img.width * s, h = img.height * s;
    ctx.drawImage(img, (N - w) / 2, (N - h) / 2, w, h); commit();
  };
  img.src = url;
});
paint(props.value);
watch('value', () => { if (props.value !== shown) { shown = props.value; undo = []; paint(shown); } });
"""


def data_url(img: Image.Image) -> str:
    """A picture as a PNG data URL (a canvas pad's value, or its ``background``)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def read_data_url(value: str, what: str, max_bytes: int) -> Image.Image:
    """The picture in a ``data:image/…;base64,`` URL; an EBMError (before decoding anything large)
    for another kind of string, a file over ``max_bytes`` or bad base64."""
    head, _, b64 = value.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64")):
        raise EBMError(f"{what}: expected a picture (data:image/…;base64,…)")
    if len(b64) > (max_bytes + 2) // 3 * 4:
        raise EBMError(f"{what}: file is larger than {max_bytes // 2**20} MB")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise EBMError(f"{what}: not valid base64") from None
    return open_image(raw)


def canvas_pad(elem_id: str, label: str, size: int = 280, brush: int = 13, mask: bool = False,
               color: str = "#ffffff", max_bytes: int = 20 * 2**20, render: bool = True, visible: bool = True) -> gr.HTML:
    """A drawing pad whose value is a PNG data URL ("" when empty); see the module docstring."""
    return gr.HTML("", label=label, show_label=True, container=True, html_template=HTML, css_template=CSS, js_on_load=JS,
                   elem_id=elem_id, elem_classes="ebm-pad", size=size, brush=brush, mask=mask, color=color,
                   background="", max_bytes=max_bytes, apply_default_css=False, render=render, visible=visible)
