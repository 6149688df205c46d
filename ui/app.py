"""The app: header, one tab per module, the per-browser session id, and the command line.

Endpoints (gradio_client names; those with state take ``session`` first, see :mod:`ebm_play.sessions`):
Train ``/train_start``, ``/train_status``, ``/train_pause``, ``/train_resume``, ``/train_step``,
``/train_stop``, ``/train_save``, ``/train_use``; Sample ``/sample``, ``/sample_files``, ``/score``;
Compose ``/compose``; drawing tabs ``/inpaint``, ``/denoise``, ``/ood_score``, ``/ood_batch``,
``/classify``; Landscape ``/landscape_train_start``, ``/landscape_status``, ``/landscape_pause``,
``/landscape_step``, ``/landscape_reset``, ``/landscape_sample``, ``/landscape_compose``, ``/landscape_gif``,
``/landscape_objectives_start``, ``/landscape_objectives_status``, ``/landscape_objectives_stop``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import threading

import gradio as gr
from starlette.middleware import Middleware

import ebm_play
from ebm_play.playground import Playground
from ebm_play.runs import Limits
from ebm_play.runtime import return_freed_memory
from ebm_play.sessions import SESSION_RE, new_session_id

from . import classify_tab, compose_tab, denoise_tab, inpaint_tab, landscape_tab, ood_tab, sample_tab, train_tab
from .boundary import PRIVATE, AnySession, Gate, endpoint, on
from .common import HEADER, TITLE, launch_style, patch_gradio_sessions

MAX_QUEUE = 100
TABS = ("train", "sample", "compose", "inpaint", "denoise", "ood", "classify", "landscape")


@endpoint(sid=AnySession())
def on_load(pg: Playground, sid, request: gr.Request = None):
    """Give a new browser its session id (kept in localStorage) and honour ?tab=… (the Train tab's
    settings in the address: ``train_tab.from_address``)"""
    if sid is None or not SESSION_RE.fullmatch(sid):
        sid = new_session_id()
    pg.sessions.get(sid)
    tab = request.query_params.get("tab") if request is not None else None
    return sid, (gr.Tabs(selected=tab) if tab in TABS else gr.skip())


def _layout(pg: Playground, session: gr.BrowserState) -> dict:
    gr.Markdown(HEADER)
    if pg.untrained:
        gr.Markdown("⚠ **No shipped model yet: untrained random model.** The Sample tab starts with a random "
                    "CNN; train one in the Train tab and press *Use this model in the other tabs*.",
                    elem_classes="ebm-banner", elem_id="untrained-banner")
    for problem in pg.problems:
        gr.Markdown(f"⚠ A shipped model was not loaded: {problem}", elem_classes="ebm-banner")
    parts = {}
    with gr.Tabs() as parts["tabs"]:
        with gr.Tab("Train", id="train"):
            parts["train"] = train_tab.create_tab(pg, session)
        with gr.Tab("Sample", id="sample") as parts["sample_page"]:
            parts["sample"] = sample_tab.create_tab(pg, session)
        with gr.Tab("Compose", id="compose") as parts["compose_page"]:
            parts["compose"] = compose_tab.create_tab(pg, session)
        with gr.Tab("Inpaint", id="inpaint") as page:
            inpaint_tab.create_tab(pg, session, page)
        with gr.Tab("Denoise", id="denoise") as page:
            denoise_tab.create_tab(pg, session, page)
        with gr.Tab("OOD check", id="ood") as page:
            ood_tab.create_tab(pg, session, page)
        with gr.Tab("Classify (JEM)", id="classify") as page:
            classify_tab.create_tab(pg, session, page)
        with gr.Tab("Landscape", id="landscape"):
            parts["landscape"] = landscape_tab.create_tab(pg, session)
    return parts


def build_app(device: str | None = None, max_runs: int | None = None) -> gr.Blocks:
    """Build the whole app (models load here: shipped ones, or a random CNN with a banner). The
    playground is kept as ``demo.playground`` so a host (or a test) can stop the runs."""
    if os.environ.get("EBM_PLAY_GRADIO_PATCH", "1") != "0":  # 0: without it, for benchmarks/load.py --no-patch
        patch_gradio_sessions()
    running = int(max_runs or os.environ.get("EBM_PLAY_MAX_RUNS") or 2)
    pg = Playground(device, Limits(running=running))
    threading.Thread(target=pg.data, name="ebm-data", daemon=True).start()  # warm MNIST off the request path
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        session = gr.BrowserState(None, storage_key="ebm_play_session")
        parts = _layout(pg, session)
        # show_progress_on=[]: the Tabs must not join the page's loading-status table, or the page re-reads
        # every component under them (each drawing pad included) on every status message of every event
        loaded = on(demo.load, on_load, pg, session, [session, parts["tabs"]], show_progress_on=[])
        sample = (sample_tab.refresh, pg, *parts["sample"]["refresh"])
        on(loaded.then, *sample, **PRIVATE)
        # ?tab=train&preset=fast&lr=0.002: the Train tab's settings from the page address (bad values: a note)
        on(demo.load, train_tab.from_address, pg, None, parts["train"]["address"], concurrency_limit=None, **PRIVATE)
        on(demo.load, landscape_tab.from_address, pg, None, parts["landscape"]["address"], **landscape_tab.QUICK)
        on(loaded.then, train_tab.poll, pg, *parts["train"]["poll"], **PRIVATE)  # a reload finds its run
        on(loaded.then, train_tab.data_shown, pg, *parts["train"]["data"], **PRIVATE)  # … and its uploaded images
        on(parts["sample_page"].select, *sample, **PRIVATE)
        on(loaded.then, landscape_tab.poll, pg, *parts["landscape"]["poll"], **landscape_tab.QUICK)
        on(loaded.then, landscape_tab.compare_poll, pg, *parts["landscape"]["compare"], **landscape_tab.QUICK)
        on(parts["train"]["use_event"].then, *sample, **PRIVATE)
        on(parts["compose_page"].select, compose_tab.refresh, pg, *parts["compose"]["refresh"], **PRIVATE)
    demo.playground = pg
    return demo


def launch_options(demo: gr.Blocks) -> dict:
    """Everything ``launch`` needs besides host and port: theme, CSS and the HTTP gate."""
    return {**launch_style(), "app_kwargs": {"middleware": [Middleware(Gate, blocks=demo)]}}


def main(argv: list[str] | None = None) -> None:
    """``python app.py``: flags win over environment variables, which win over defaults."""
    env = os.environ.get
    ap = argparse.ArgumentParser(description="ebm_play: energy-based models you can watch (Gradio app)")
    ap.add_argument("--host", default=env("EBM_PLAY_HOST"),
                    help="interface to listen on (EBM_PLAY_HOST; default 127.0.0.1, or GRADIO_SERVER_NAME)")
    ap.add_argument("--port", type=int, default=int(env("EBM_PLAY_PORT") or env("GRADIO_SERVER_PORT") or 7860),
                    help="port (EBM_PLAY_PORT; default 7860)")
    ap.add_argument("--device", default=env("EBM_PLAY_DEVICE") or "auto",
                    help="cpu, cuda or auto (EBM_PLAY_DEVICE; default auto)")
    ap.add_argument("--share", action="store_true", default=env("EBM_PLAY_SHARE", "") not in ("", "0", "false"),
                    help="also serve on a temporary public gradio.live link (EBM_PLAY_SHARE=1)")
    ap.add_argument("--max-runs", type=int, default=None,
                    help="training runs allowed at once (EBM_PLAY_MAX_RUNS; default 2)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own health checks
    ebm_play.configure_threads()
    return_freed_memory()
    try:
        demo = build_app(args.device, args.max_runs)
    except ebm_play.EBMError as e:
        ap.error(str(e))
    # Bounded on purpose: at most 2 heavy jobs run at once (concurrency_id "compute"), and at most
    # MAX_QUEUE events wait; past that a caller gets "queue full" at once instead of a long wait.
    demo.queue(default_concurrency_limit=1, max_size=MAX_QUEUE)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True,
                **launch_options(demo))
    # The garbage collector's full passes stop every thread for as long as they take. Nothing built
    # so far (gradio, torch, the models: about 400,000 objects) ever becomes garbage: frozen, it is
    # left out of them.
    gc.collect()
    gc.freeze()
    demo.block_thread()
