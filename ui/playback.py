"""The controls under a finished run, shared by the Sample and Compose tabs: a step slider that
scrubs through the recorded frames, play/pause (a ``gr.Timer`` that advances one frame per tick)
and the download buttons (GIF, MP4, PNG, .npz)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from . import chains as C
from .common import user_errors
from ebm_play.media import chain_grid

PRIVATE = dict(api_visibility="private", show_progress="hidden")


@dataclass
class Playback:
    slider: gr.Slider
    play: gr.Button
    pause: gr.Button
    downloads: list[gr.DownloadButton]
    timer: gr.Timer


def controls(prefix: str) -> Playback:
    """Lay out the slider, play/pause and downloads (inside the current column)."""
    with gr.Row(equal_height=True):
        slider = gr.Slider(0, 1, 0, step=1, label="Step (scrub the recorded chain)", interactive=False,
                           elem_id=f"{prefix}-step", scale=4)
        play = gr.Button("▶ Play", size="sm", elem_id=f"{prefix}-play", scale=1, min_width=80)
        pause = gr.Button("❚❚ Pause", size="sm", elem_id=f"{prefix}-pause", scale=1, min_width=80)
    with gr.Row():
        downloads = [gr.DownloadButton(text, visible=False, size="sm", elem_id=f"{prefix}-{key}")
                     for key, text in (("gif", "GIF"), ("mp4", "MP4"), ("png", "PNG (final grid)"),
                                       ("npz", "Tensors (.npz)"))]
    return Playback(slider, play, pause, downloads, gr.Timer(0.3, active=False))


def reset() -> tuple:
    """Updates for (timer, slider, *downloads) when a new run starts."""
    return (gr.Timer(active=False), gr.Slider(interactive=False)) + (gr.DownloadButton(visible=False),) * 4


def finished_slider(rec) -> gr.Slider:
    last = rec.last_step
    return gr.Slider(0, max(last, 1), last, step=1, interactive=True)


def wire(pb: Playback, record_box: gr.Textbox, fps: gr.Slider, grid_img: gr.Image, status: gr.Markdown,
         folder: str, run_event) -> None:
    """Connect the controls to the recording whose id is in ``record_box``."""

    @user_errors
    def show_files(record, fps):
        if not record:
            return (gr.skip(),) * 4
        f = C.export_files(folder, record, fps)
        return tuple(gr.DownloadButton(value=f[k], visible=f[k] is not None) for k in ("gif", "mp4", "png", "npz"))

    def frame_at(record, step):
        rec = C.RECORDS.get(record)
        if rec is None or not rec.frame_at:
            return None, None
        return rec.nearest_frame(step or 0), rec

    def scrub(record, step):
        i, rec = frame_at(record, step)
        if rec is None:
            return gr.skip(), gr.skip()
        return chain_grid(rec.frames[i]), C.status_line_at(rec, i)

    def play(record, step):
        i, rec = frame_at(record, step)
        if rec is None:
            return gr.skip(), gr.skip()
        return gr.Timer(active=True), (0 if i >= len(rec.frame_at) - 1 else gr.skip())

    def tick(record, step):
        i, rec = frame_at(record, step)
        if rec is None:
            return gr.Timer(active=False), gr.skip(), gr.skip(), gr.skip()
        nxt = i + 1 if rec.frame_at[i] <= (step or 0) else i
        if nxt >= len(rec.frame_at):
            return gr.Timer(active=False), gr.skip(), gr.skip(), gr.skip()
        last = nxt == len(rec.frame_at) - 1  # (never re-activate here: a Pause may have come in meanwhile)
        return (gr.Timer(active=False) if last else gr.skip(), rec.frame_at[nxt], chain_grid(rec.frames[nxt]),
                C.status_line_at(rec, nxt))

    media = dict(concurrency_limit=2, concurrency_id="media")
    run_event.success(show_files, [record_box, fps], pb.downloads, api_visibility="private", **media)
    fps.release(show_files, [record_box, fps], pb.downloads, **PRIVATE, **media)
    pb.slider.input(scrub, [record_box, pb.slider], [grid_img, status], trigger_mode="always_last",
                    concurrency_limit=None, **PRIVATE)
    pb.play.click(play, [record_box, pb.slider], [pb.timer, pb.slider], **PRIVATE)
    pb.pause.click(lambda: gr.Timer(active=False), None, pb.timer, queue=False, **PRIVATE)
    pb.timer.tick(tick, [record_box, pb.slider], [pb.timer, pb.slider, grid_img, status], concurrency_limit=None,
                  **PRIVATE)
    # (the timer's fps follows the slider of the tab: 1/fps seconds per frame)
    fps.change(lambda v: gr.Timer(value=1.0 / max(float(v or 10), 1.0)), fps, pb.timer, queue=False, **PRIVATE)
