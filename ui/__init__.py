"""The Gradio app over the ebm_play engine: one module per tab, ``build_app()`` in :mod:`ui.app`."""

from .app import build_app, main

__all__ = ["build_app", "main"]
