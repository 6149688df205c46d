"""Drawing on the app's pads with real mouse strokes, as a person does: shared by the browser tests
and benchmarks/browser.py (which counts the requests each stroke sends)."""

from __future__ import annotations

SEVEN = [(0.28, 0.22), (0.72, 0.22), (0.55, 0.5), (0.45, 0.8)]  # fractions of the pad's picture
MASK = [(0.15, 0.62), (0.85, 0.62), (0.85, 0.72), (0.15, 0.72), (0.15, 0.82), (0.85, 0.82)]  # two bars


def stroke(page, selector: str, points: list[tuple[float, float]], steps: int = 3) -> None:
    """One stroke through ``points`` (fractions of the pad's 280×280 picture, centred in its canvas),
    ``steps`` mouse moves between two points."""
    canvas = page.locator(f"{selector} canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    side = min(box["width"], box["height"]) * 0.9
    x0, y0 = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
    page.mouse.move(x0 + points[0][0] * side, y0 + points[0][1] * side)
    page.mouse.down()
    for u, v in points[1:]:
        page.mouse.move(x0 + u * side, y0 + v * side, steps=steps)
    page.mouse.up()
