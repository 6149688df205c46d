"""Pictures of 2-D landscapes for the Landscape tab: heat map with contour lines, particles and
force arrows, a run's canvas, the chart of its energies, composition strips and GIFs.

The plot fills the whole picture (no margins, no axes): pixel (px, py) of a ``size``² picture is the
point x = −1 + 2·px/size, y = 1 − 2·py/size, so a click on the picture maps straight to the plane
(:func:`pixel_to_point`). Speed matters (the training view refreshes several times a second): the
heat map is matplotlib's colour map applied as a lookup table, contour lines come from contourpy
(matplotlib's contouring library) and everything is drawn with PIL, ~10 ms a frame at 520 px
where a matplotlib figure takes ~60 ms. A sampling frame reuses one background.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import contourpy
import matplotlib
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from .common import thin

SIZE = 520
CMAP = "viridis"  # low energy (data-like) = dark valleys, high energy = bright
COLORS = {
    "data": (255, 255, 255),
    "buffer": (249, 115, 22),  # orange: replay buffer (negatives)
    "fresh": (236, 72, 153),  # pink: fresh chains from noise
    "down": (34, 211, 238),  # cyan: energy pulled down (data side of the loss)
    "up": (239, 68, 68),  # red: energy pushed up (negative side)
    "a": (249, 115, 22),
    "b": (236, 72, 153),
    "custom": (255, 255, 255),
}
BLANK = (30, 27, 75)  # the canvas before there is a landscape to show
CURVES = {"e_real": "E(data)", "e_fake": "E(negatives)", "loss": "loss"}
CURVE_COLORS = {"E(data)": (37, 99, 235), "E(negatives)": (249, 115, 22), "loss": (100, 116, 139)}
_LUT = (matplotlib.colormaps[CMAP](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def point_to_pixel(p: np.ndarray, size: int = SIZE) -> np.ndarray:
    p = np.asarray(p, dtype=np.float32).reshape(-1, 2)
    return np.stack([(p[:, 0] + 1) / 2 * size, (1 - p[:, 1]) / 2 * size], 1)


def pixel_to_point(px: float, py: float, size: int = SIZE) -> tuple[float, float]:
    return float(np.clip(-1 + 2 * px / size, -1, 1)), float(np.clip(1 - 2 * py / size, -1, 1))


SPAN = 10.0  # energies more than this above the minimum are drawn alike: their probability is < e⁻¹⁰ of the top


def energy_range(E: np.ndarray, span: float = SPAN) -> tuple[float, float]:
    """Colour range: from the lowest energy up to ``span`` above it (or the 98th percentile, if
    lower), so the far corners, where an MLP energy climbs steeply, cannot wash out the valleys."""
    finite = E[np.isfinite(E)]
    if not finite.size:
        return 0.0, 1.0
    lo = float(finite.min())
    hi = min(float(np.percentile(finite, 98)), lo + span)
    return lo, (hi if hi > lo + 1e-6 else lo + 1.0)


def background(xs: np.ndarray, ys: np.ndarray, E: np.ndarray, size: int = SIZE, contours: int = 12) -> Image.Image:
    """The heat map of E with ``contours`` contour lines, filling a ``size``² RGB picture.

    Fast path (~10 ms at 520 px, against ~60 ms for a matplotlib figure): matplotlib's colour map as
    a lookup table, a bilinear resize, and contour lines from contourpy (matplotlib's own contouring
    library) drawn with PIL."""
    E = np.nan_to_num(np.asarray(E, dtype=np.float32), nan=0.0, posinf=1e6, neginf=-1e6)
    lo, hi = energy_range(E)
    idx = ((np.clip(E, lo, hi) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    img = Image.fromarray(_LUT[idx[::-1]]).resize((size, size), Image.BILINEAR)  # row 0 of E is the bottom
    if contours:
        overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        gen = contourpy.contour_generator(np.asarray(xs, np.float64), np.asarray(ys, np.float64), E.astype(np.float64))
        for level in np.linspace(lo, hi, contours + 2)[1:-1]:
            for line in gen.lines(level):
                if len(line) > 1:
                    draw.line([tuple(p) for p in point_to_pixel(line, size)], fill=(255, 255, 255, 115), width=1)
        img = Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")
    return img


@functools.lru_cache(maxsize=8)
def _font(size: int = 14):
    """DejaVu Sans, which matplotlib ships (so ×, σ, → render), else Pillow's default font."""
    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except OSError:
        return ImageFont.load_default()


def draw_points(draw: ImageDraw.ImageDraw, pts, color, r: float = 2.0, size: int = SIZE, outline=None,
                cross: bool = False) -> None:
    if pts is None or not len(pts):
        return
    for px, py in point_to_pixel(pts, size):
        if cross:
            draw.line((px - r, py - r, px + r, py + r), fill=color, width=2)
            draw.line((px - r, py + r, px + r, py - r), fill=color, width=2)
        else:
            draw.ellipse((px - r, py - r, px + r, py + r), fill=color, outline=outline)


def draw_arrows(draw: ImageDraw.ImageDraw, arrows: dict, size: int = SIZE) -> None:
    """``arrows``: x, y (arrow feet in the plane), u, v (direction, any scale), sign (−1 pulled down,
    +1 pushed up). Lengths are scaled so the longest arrow is 7% of the picture."""
    x, y, u, v, s = (np.asarray(arrows[k], dtype=np.float32).ravel() for k in ("x", "y", "u", "v", "sign"))
    mag = np.hypot(u, v)
    top = float(mag.max()) if mag.size else 0.0
    if top <= 0:
        return
    scale = 0.07 * size / top
    feet = point_to_pixel(np.stack([x, y], 1), size)
    for (px, py), du, dv, m, sign in zip(feet, u, v, mag, s):
        if m < 0.08 * top:
            continue
        ex, ey = px + du * scale, py - dv * scale  # the picture's y axis points down
        color = COLORS["down"] if sign < 0 else COLORS["up"]
        draw.line((px, py, ex, ey), fill=color, width=2)
        ang = np.arctan2(ey - py, ex - px)
        h = 6.0
        left = (ex - h * np.cos(ang - 0.45), ey - h * np.sin(ang - 0.45))
        right = (ex - h * np.cos(ang + 0.45), ey - h * np.sin(ang + 0.45))
        draw.polygon([(ex, ey), left, right], fill=color)


def draw_field(draw: ImageDraw.ImageDraw, xs: np.ndarray, ys: np.ndarray, U: np.ndarray, V: np.ndarray,
               size: int = SIZE, color=(239, 68, 68)) -> None:
    """A vector field on a grid ((U, V)[i, j] at (xs[j], ys[i])) as arrows of one colour. A score's
    length spans orders of magnitude (tiny in a valley, huge on the steep rim of an MLP energy), so
    lengths are capped at the field's 75th percentile: the direction is what matters, and arrows
    shorter than 5% of that are left out (flat ground)."""
    X, Y = np.meshgrid(xs, ys)
    u, v = np.asarray(U, np.float32).ravel(), np.asarray(V, np.float32).ravel()
    mag = np.nan_to_num(np.hypot(u, v))
    cap = float(np.percentile(mag, 75)) if mag.size else 0.0
    if cap <= 0:
        return
    step = 0.8 * size / max(len(xs), 2)  # the longest arrow: most of a grid cell
    feet = point_to_pixel(np.stack([X.ravel(), Y.ravel()], 1), size)
    for (px, py), du, dv, m in zip(feet, u, v, mag):
        if m < 0.05 * cap:
            continue
        k = step * min(m, cap) / (cap * m)
        ex, ey = px + du * k, py - dv * k  # the picture's y axis points down
        draw.line((px, py, ex, ey), fill=color, width=1)
        ang = np.arctan2(ey - py, ex - px)
        h = 4.0
        draw.polygon([(ex, ey), (ex - h * np.cos(ang - 0.5), ey - h * np.sin(ang - 0.5)),
                      (ex - h * np.cos(ang + 0.5), ey - h * np.sin(ang + 0.5))], fill=color)


def label(img: Image.Image, text: str, corner: str = "tl") -> None:
    draw = ImageDraw.Draw(img, "RGBA")
    font = _font(max(11, img.width // 38))
    box = draw.textbbox((0, 0), text, font=font)
    w, h = box[2] - box[0], box[3] - box[1]
    x = 6 if corner[1] == "l" else img.width - w - 14
    y = 6 if corner[0] == "t" else img.height - h - 14
    draw.rectangle((x - 2, y - 2, x + w + 8, y + h + 8), fill=(15, 23, 42, 170))
    draw.text((x + 3, y + 1), text, fill=(255, 255, 255, 255), font=font)


def compose_frame(bg: Image.Image, *, data=None, buffer=None, fresh=None, particles=None, particle_color="a",
                  arrows: dict | None = None, text: str | None = None) -> Image.Image:
    """Overlay points and arrows on a background picture (a copy; the background is reused)."""
    img = bg.copy()
    size = img.width
    draw = ImageDraw.Draw(img)
    r = max(1.2, size / 300)
    draw_points(draw, data, COLORS["data"], r * 0.8, size)
    draw_points(draw, buffer, COLORS["buffer"], r, size)
    draw_points(draw, fresh, COLORS["fresh"], r * 1.6, size, cross=True)
    draw_points(draw, particles, COLORS.get(particle_color, particle_color), r * 1.2, size, outline=(0, 0, 0))
    if arrows is not None:
        draw_arrows(draw, arrows, size)
    if text:
        label(img, text, "bl")  # bottom left: the top is where a page puts the picture's own label
    return img


def force_arrows(xs: np.ndarray, ys: np.ndarray, dE: np.ndarray, every: int = 3, E: np.ndarray | None = None,
                 span: float = SPAN) -> dict:
    """Arrows from a grid of ΔE (the change one training step makes to the landscape): each points
    down the slope of ΔE (towards where energy is pulled down, away from where it is pushed up),
    coloured by the sign of ΔE at its foot. With ``E`` (the energy on the same grid), arrows are
    kept only where E is within ``span`` of its minimum: where samples can be at all, not in the
    far corners where the change of a steep MLP energy is large but irrelevant."""
    gy, gx = np.gradient(dE, ys, xs)
    sl = (slice(every // 2, None, every), slice(every // 2, None, every))
    X, Y = np.meshgrid(xs, ys)
    keep = np.ones_like(dE, dtype=bool)
    if E is not None and E.shape == dE.shape:
        keep = E <= np.nanmin(E) + span
    k = keep[sl]
    return {"x": X[sl][k], "y": Y[sl][k], "u": -gx[sl][k], "v": -gy[sl][k], "sign": np.sign(dE[sl][k])}


def side_by_side(a: Image.Image, b: Image.Image, gap: int = 6) -> Image.Image:
    out = Image.new("RGB", (a.width + b.width + gap, max(a.height, b.height)), (255, 255, 255))
    out.paste(a, (0, 0))
    out.paste(b, (a.width + gap, 0))
    return out


def save_gif(frames: list[Image.Image], path, fps: float = 8.0) -> str:
    """Frames → an animated GIF (adaptive palette, looping), written to ``path``."""
    if not frames:
        raise ValueError("no frames")
    pal = [f.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
           for f in frames]
    buf = io.BytesIO()
    pal[0].save(buf, format="GIF", save_all=True, append_images=pal[1:], duration=int(1000 / fps), loop=0,
                optimize=False, disposal=1)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return str(path)


def line_chart(series: dict[str, tuple[np.ndarray, np.ndarray]], colors: dict[str, tuple], size=(420, 200),
               title: str = "") -> Image.Image:
    """A small line chart drawn with PIL: an <img> costs the browser nothing, where a live plot
    component re-rendered several times a second stalls a busy page."""
    w, h = size
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(11)
    left, right, top, bottom = 44, w - 8, 18, h - 18
    pts = [(np.asarray(x, float), np.asarray(y, float)) for x, y in series.values() if len(x)]
    if not pts:
        draw.text((left, h // 2), "no steps yet", fill=(100, 116, 139), font=font)
        return img
    xs = np.concatenate([p[0] for p in pts])
    ys = np.concatenate([p[1] for p in pts])
    ys = ys[np.isfinite(ys)]
    x0, x1 = float(xs.min()), float(max(xs.max(), xs.min() + 1))
    y0, y1 = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
    if y1 - y0 < 1e-6:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def px(x, y):
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    draw.rectangle((left, top, right, bottom), outline=(203, 213, 225))
    if y0 < 0 < y1:
        draw.line((*px(x0, 0), *px(x1, 0)), fill=(226, 232, 240))
    for v in (y0 + pad, y1 - pad):
        draw.text((4, px(x0, v)[1] - 6), f"{v:+.2f}", fill=(71, 85, 105), font=font)
    draw.text((left, bottom + 3), f"{x0:.0f}", fill=(71, 85, 105), font=font)
    end = f"step {x1:.0f}"
    draw.text((right - draw.textlength(end, font=font), bottom + 3), end, fill=(71, 85, 105), font=font)
    lx = left + 4
    for name, (x, y) in series.items():
        color = colors.get(name, (15, 23, 42))
        x, y = np.asarray(x, float), np.asarray(y, float)
        ok = np.isfinite(y)
        if ok.sum() > 1:
            draw.line([px(a, b) for a, b in zip(x[ok], y[ok])], fill=color, width=2)
        draw.text((lx, 2), name, fill=color, font=font)
        lx += draw.textlength(name, font=font) + 12
    if title:
        draw.text((right - draw.textlength(title, font=font), 2), title, fill=(71, 85, 105), font=font)
    return img


# --- what the tab shows ----------------------------------------------------------------------------
def run_picture(view, show, state: str, data=None) -> Image.Image:
    """The canvas for a run's published view (``ebm_play.runs.LandscapeView``) with the layers in
    ``show``; ``data`` replaces the view's points (points clicked since its last update)."""
    bg = background(view.xs, view.ys, view.E, contours=12 if "contours" in show else 0)
    arrows = None
    if "arrows" in show and view.forces is not None:
        fx, fy, fE, dE = view.forces
        arrows = force_arrows(fx, fy, dE, E=fE)
    text = f"step {view.step:,}" + ("" if state == "running" else f" · {state}")
    return compose_frame(bg, data=(view.data if data is None else data) if "data" in show else None,
                         buffer=view.buffer if "buffer" in show else None,
                         fresh=view.fresh if "fresh" in show else None, arrows=arrows, text=text)


def preview(points, text: str) -> Image.Image:
    """The canvas without a run: a data set (or clicked points) on a blank square."""
    return compose_frame(Image.new("RGB", (SIZE, SIZE), BLANK), data=points, text=text)


def energy_curves(history: list[dict]) -> Image.Image:
    """E(data), E(negatives) and the loss against the step, each the mean of 10 steps (one
    contrastive-divergence step is noisy)."""
    smooth = {k: pd.Series([r[k] for r in history], dtype="float64").rolling(10, min_periods=1).mean().tolist()
              for k in CURVES}
    rows = thin([{"step": r["step"], **{k: smooth[k][i] for k in CURVES}} for i, r in enumerate(history)], 300)
    x = np.array([r["step"] for r in rows])
    return line_chart({label: (x, np.array([r[k] for r in rows])) for k, label in CURVES.items()}, CURVE_COLORS,
                      title="mean of 10 steps")


def composition(terms: list[tuple[tuple, str]], total: tuple, samples: np.ndarray, size: int = 300) -> Image.Image:
    """Each term's landscape ((xs, ys, E), caption), then their sum with samples on it, in a row."""
    pics = []
    for grid, caption in terms:
        img = background(*grid, size=size)
        label(img, caption)
        pics.append(img)
    pics.append(compose_frame(background(*total, size=size), particles=samples, particle_color="a",
                              text="= sum (+ samples)"))
    strip = pics[0]
    for p in pics[1:]:
        strip = side_by_side(strip, p)
    return strip


def training_frames(snapshots, xs, ys, data, size: int = 300) -> list[Image.Image]:
    """GIF frames of a training run: its snapshots (step, energy grid, buffer particles)."""
    return [compose_frame(background(xs, ys, E.astype(np.float32), size=size, contours=8), data=data, buffer=buf,
                          text=f"step {step:,}") for step, E, buf in snapshots]


def sampling_frames(grid: tuple, frames, sides: list[str], size: int = 300) -> list[Image.Image]:
    """GIF frames of a comparison: each kept state of every side, side by side."""
    bg = background(*grid, size=size)
    out = []
    for k, states in frames:
        pics = [compose_frame(bg, particles=x.astype(np.float32), particle_color=side.lower(), text=f"{side} · step {k}")
                for side, x in zip(sides, states)]
        out.append(pics[0] if len(pics) == 1 else side_by_side(*pics))
    return out


FIELD_COLOR = (239, 68, 68)  # red: the score arrows (no colour of the viridis heat map)
N_FRESH_SHOWN = 400  # of a comparison's fresh samples (all of them count in its mode shares)


def objective_picture(side, data, size: int = 400) -> Image.Image:
    """One side of an objectives comparison (``ebm_play.runs.SideView``): the heat map of its energy,
    the data (white), the score field −∇E as arrows (red; for dsm the learned score at σ_min) and,
    once drawn, its fresh samples (pink crosses)."""
    fresh = None if side.samples is None else side.samples[:N_FRESH_SHOWN]
    img = compose_frame(background(side.xs, side.ys, side.E, size=size, contours=8), data=data, fresh=fresh)
    draw_field(ImageDraw.Draw(img), *side.score, size=size, color=FIELD_COLOR)
    what = f"learned score at σ = {side.sigma:g}" if side.sigma is not None else "−∇E, the field its energy implies"
    label(img, f"{side.objective} · update {side.step:,}")
    label(img, what, "bl")
    return img
