"""The one boundary every event crosses, public API or hidden page event alike.

Anyone can call any event of a public app, with any values: the page's hidden events are reachable
by their ``fn_index`` as easily as the named API. So nothing is wired without going through here:

- :func:`endpoint` declares, for every parameter of an event function, what it accepts (a
  :class:`Spec`); the function only ever sees checked values, and a bad one ends in one short
  message that names the field. Unit tests call these functions directly, without a server.
- :func:`on` (and :func:`api`) wire an endpoint to a trigger: raw values (``preprocess=False``,
  so gradio's own decoding never sees a hostile file or NaN first), the playground bound as the
  first argument, engine errors turned into a one-line ``gr.Error``, the call counted as a request
  in flight (training threads step aside meanwhile, :data:`ebm_play.runtime.FOREGROUND`).
- :class:`Gate`, an ASGI middleware installed through ``launch(app_kwargs=…)``, refuses requests
  gradio itself would answer with a crash or a stack of text: an unknown ``fn_index``, a ``data``
  list of the wrong length, a body over :data:`MAX_BODY` bytes.

``tests/test_boundary.py`` checks that every function of the built app is an endpoint, and
``tests/test_robustness.py`` sends hostile values to every event through the real server.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import typing
from collections.abc import Callable, Sequence

import gradio as gr

from ebm_play import EBMError, validate
from ebm_play.runtime import FOREGROUND
from ebm_play.sessions import check_session

log = logging.getLogger("ebm_play.app")

MAX_BODY = 4 * 2**20  # a request body (JSON: pictures travel as uploaded files, not inline)
MAX_TEXT = 10_000
MAX_LIST = 10_000


# --- what a parameter accepts ------------------------------------------------------------------------
class Spec:
    """A parameter's check: ``spec(name, value)`` returns the value to use or raises EBMError.
    ``label`` names the field in messages as the page does (default: the parameter's name)."""

    label: str | None = None

    def __init__(self, optional: bool = False, label: str | None = None):
        self.optional, self.label = optional, label

    def named(self, label: str) -> Spec:
        self.label = label
        return self

    def __call__(self, name: str, v):
        if v is None or (self.optional and v == ""):
            if self.optional:
                return None
            raise EBMError(f"{name} is missing")
        return self.check(name, v)

    def check(self, name: str, v):
        return v


class Session(Spec):
    def __call__(self, name, v):
        return check_session(v)


class AnySession(Spec):
    """A session id that may not exist yet (the page's first events), or none."""

    def __call__(self, name, v):
        return v if isinstance(v, str) and v and check_session(v) else None


class Whole(Spec):
    def __init__(self, lo: int, hi: int, optional: bool = False):
        super().__init__(optional)
        self.lo, self.hi = lo, hi

    def check(self, name, v):
        return validate.whole(name, v, self.lo, self.hi)


class Number(Spec):
    def __init__(self, lo: float = -math.inf, hi: float = math.inf, optional: bool = False, zero_is_none: bool = False):
        super().__init__(optional)
        self.lo, self.hi, self.zero_is_none = lo, hi, zero_is_none

    def __call__(self, name, v):
        if self.zero_is_none and isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0:
            return None  # gradio shows an empty number field as 0 and sends 0 once it is shown
        return super().__call__(name, v)

    def check(self, name, v):
        return validate.number(name, v, self.lo, self.hi)


class Choice(Spec):
    def __init__(self, values: Sequence, optional: bool = False):
        super().__init__(optional)
        self.values = list(values)

    def check(self, name, v):
        if isinstance(v, (list, dict)) or v not in self.values:
            shown = ", ".join(map(str, self.values[:12])) + (" …" if len(self.values) > 12 else "")
            raise EBMError(f"{name}: unknown value {str(v)[:40]!r}; choose one of: {shown}")
        return v


class Flag(Spec):
    def check(self, name, v):
        if not isinstance(v, bool):
            raise EBMError(f"{name} must be true or false, got {str(v)[:40]!r}")
        return v


class Text(Spec):
    def __init__(self, max_len: int = MAX_TEXT, optional: bool = True):
        super().__init__(optional)
        self.max_len = max_len

    def check(self, name, v):
        if not isinstance(v, str):
            raise EBMError(f"{name} must be text, got {type(v).__name__}")
        if len(v) > self.max_len:
            raise EBMError(f"{name} is longer than {self.max_len:,} characters")
        return v


class Choices(Spec):
    """A list of values from ``values`` (a checkbox group)."""

    def __init__(self, values: Sequence):
        super().__init__(optional=False)
        self.values = list(values)

    def check(self, name, v):
        if not isinstance(v, list) or len(v) > len(self.values):
            raise EBMError(f"{name} must be a list of choices")
        return [Choice(self.values)(name, x) for x in v]


class File(Spec):
    """An uploaded file: gradio's FileData (its path already checked to lie in the upload folder),
    or None. Returns the server path."""

    def __init__(self, max_bytes: int = 64 * 2**20):
        super().__init__(optional=True)
        self.max_bytes = max_bytes

    def check(self, name, v):
        if isinstance(v, dict):
            size = v.get("size")
            if isinstance(size, int) and size > self.max_bytes:
                raise EBMError(f"{name}: the file is larger than {self.max_bytes // 2**20} MB")
            v = v.get("path")
        if not isinstance(v, str) or not v:
            raise EBMError(f"{name} must be an uploaded file")
        return v


class Picture(Spec):
    """A picture input's raw value (an image editor's {background, layers, composite}, a FileData,
    a path): shape-checked here, opened later by ``ebm_play.images.open_image`` (bombs refused)."""

    def __init__(self):
        super().__init__(optional=True)

    def check(self, name, v):
        if isinstance(v, str):
            return v
        if not isinstance(v, dict):
            raise EBMError(f"{name} must be a picture (an image editor value or an uploaded file)")
        layers = v.get("layers")
        if layers is not None and (not isinstance(layers, list) or len(layers) > 16):
            raise EBMError(f"{name}: 'layers' must be a list of at most 16 pictures")
        return v


class Json(Spec):
    """Structured data (lists of experts or points): a list, or JSON text of one, bounded in size."""

    def __init__(self, max_items: int = MAX_LIST, optional: bool = False):
        super().__init__(optional)
        self.max_items = max_items

    def check(self, name, v):
        if isinstance(v, str):
            if len(v) > MAX_BODY:
                raise EBMError(f"{name} is too long")
            try:
                v = json.loads(v)
            except (json.JSONDecodeError, RecursionError) as e:
                raise EBMError(f"{name} must be a JSON list ({getattr(e, 'msg', 'nested too deep')})") from None
        if not isinstance(v, list):
            raise EBMError(f"{name} must be a list")
        if len(v) > self.max_items:
            raise EBMError(f"{name} has more than {self.max_items:,} items")
        return v


class Kept(Spec):
    """A ``gr.State`` value: kept on the server, never sent by a client."""

    def __call__(self, name, v):
        return v


class Click(Spec):
    """A click's coordinates (``gr.SelectData``): two finite numbers."""

    def __call__(self, name, v):
        index = getattr(v, "index", None)
        if not isinstance(index, (list, tuple)) or len(index) != 2:
            raise EBMError("a click needs two coordinates")
        return tuple(validate.number("click coordinate", c, -1e6, 1e6) for c in index)


# --- the decorator and the wiring --------------------------------------------------------------------
def endpoint(**specs: Spec) -> Callable:
    """Declare what each parameter after the first (the playground) accepts. The function then
    sees only checked values; a missing declaration is an error when the module is imported."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        hints = _hints(fn)
        params = [p for p in list(sig.parameters)[1:] if hints.get(p) is not gr.Request]  # gradio's, not a caller's
        undeclared = [p for p in params if p not in specs]
        if undeclared or set(specs) - set(params):
            raise TypeError(f"{fn.__name__}: declare a Spec for every parameter (missing {undeclared})")

        def checked_args(args, kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            for name, spec in specs.items():
                bound.arguments[name] = spec(spec.label or name.replace("_", " "), bound.arguments[name])
            return bound

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def checked_gen(*args, **kwargs):
                bound = checked_args(args, kwargs)
                yield from fn(*bound.args, **bound.kwargs)
            checked = checked_gen
        else:
            @functools.wraps(fn)
            def checked(*args, **kwargs):
                bound = checked_args(args, kwargs)
                return fn(*bound.args, **bound.kwargs)
        checked.specs = specs
        return checked

    return decorate


def _hints(fn: Callable) -> dict:
    """Resolved annotations: gradio finds gr.Request and gr.SelectData parameters by them."""
    try:
        return typing.get_type_hints(fn)
    except (NameError, TypeError):
        return {}


def _as_gr_error(fn_name: str, e: Exception) -> gr.Error:
    if isinstance(e, gr.Error):
        return e
    if isinstance(e, EBMError):
        return gr.Error(str(e)[:400], print_exception=False)
    log.exception("unexpected error in %s", fn_name)
    return gr.Error(f"unexpected error ({type(e).__name__}): {str(e)[:200]}", print_exception=False)


def handler(fn: Callable, pg) -> Callable:
    """``fn`` (an :func:`endpoint`) bound to the playground, as gradio calls it."""
    if not hasattr(fn, "specs"):
        raise TypeError(f"{fn.__name__} is not an endpoint: decorate it with @endpoint(...)")
    sig = inspect.signature(fn)
    sig = sig.replace(parameters=list(sig.parameters.values())[1:])

    if inspect.isgeneratorfunction(fn):
        def call(*args, **kwargs):
            try:
                with FOREGROUND.active():
                    yield from fn(pg, *args, **kwargs)
            except Exception as e:
                raise _as_gr_error(fn.__name__, e) from None
    else:
        def call(*args, **kwargs):
            try:
                with FOREGROUND.active():
                    return fn(pg, *args, **kwargs)
            except Exception as e:
                raise _as_gr_error(fn.__name__, e) from None
    first = next(iter(inspect.signature(fn).parameters))
    call.__name__, call.__doc__, call.__signature__ = fn.__name__, fn.__doc__, sig
    call.__annotations__ = {k: v for k, v in _hints(fn).items() if k != first}
    call.endpoint = fn
    return call


# show_progress_on=[]: no component of a quiet event joins the page's loading-status table, whose every
# entry the page re-reads (get_data) on each status message of every event (issue #21)
PRIVATE = dict(api_visibility="private", show_progress="hidden", show_progress_on=[])


def on(trigger: Callable, fn: Callable, pg, inputs=None, outputs=None, **kw):
    """Wire an endpoint to a trigger (``btn.click``, ``timer.tick`` …) with raw values."""
    kw.setdefault("preprocess", False)
    if kw.get("api_name") is None:
        kw.setdefault("api_visibility", "private")
    return trigger(handler(fn, pg), inputs, outputs, **kw)


# --- the last word of a page wins ---------------------------------------------------------------------
NEWER = Whole(0, 10**9, optional=True).named("newer calls")  # sent by the page: see on_changes
# A fill of several fields (a preset, the page address) fires one change each, and the page sends them
# at once: gradio checks trigger_mode before it reads the inputs, so "always_last" does not hold the
# later calls back, the first carries only some of the new values, and its answer can come back last.
# So each call waits SETTLE_MS in the page, then says how many calls of the same event the page sent
# meanwhile; the event answers nothing when there were any (the newest call answers).
SETTLE_MS = 100
NEWER_JS = """async (...v) => {{
  const c = (window.ebmCalls ??= {{}}), n = (c[{key!r}] = (c[{key!r}] || 0) + 1);
  await new Promise((r) => setTimeout(r, {ms}));
  return [...v.slice(0, -1), c[{key!r}] - n];
}}"""


def on_changes(fields: Sequence, fn: Callable, pg, inputs: list, outputs: list, **kw):
    """Wire ``fn`` to the change of every one of ``fields``; its last input is :data:`NEWER`: the
    calls of this event the page sent after this one (``fn`` answers with ``gr.skip()`` then)."""
    newer = gr.Number(None, visible=False)
    return on(functools.partial(gr.on, [f.change for f in fields]), fn, pg, [*inputs, newer], outputs,
              js=NEWER_JS.format(key=fn.__name__, ms=SETTLE_MS), trigger_mode="always_last", **kw)


def api(fn: Callable, pg, api_name: str, **kw):
    """An API-only endpoint (no component), from the function's signature."""
    return gr.api(handler(fn, pg), api_name=api_name, **kw)


# --- the HTTP gate -----------------------------------------------------------------------------------
class Gate:
    """ASGI middleware in front of gradio's event routes: one short JSON error (HTTP 422) for a body
    too large, not JSON, an unknown event or a wrong number of values, before gradio parses it."""

    ROUTES = ("/gradio_api/queue/join", "/gradio_api/call/", "/gradio_api/run/")

    def __init__(self, app, blocks: gr.Blocks | None = None):
        self.app, self.blocks = app, blocks

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].startswith(self.ROUTES):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY:
                return await self._refuse(send, f"request body larger than {MAX_BODY // 2**20} MB")
        problem = self._check(scope["path"], body)
        if problem:
            return await self._refuse(send, problem)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _check(self, path: str, body: bytes) -> str | None:
        try:
            payload = json.loads(body or b"{}")
        except (ValueError, RecursionError):
            return "the request body is not valid JSON"
        if not isinstance(payload, dict):
            return "the request body must be a JSON object"
        data = payload.get("data", [])
        if not isinstance(data, list):
            return "'data' must be a list of input values"
        fn = self._fn(path, payload)
        if isinstance(fn, str):
            return fn
        if fn is not None and len(data) != len(fn.inputs):
            return f"this event takes {len(fn.inputs)} input values, got {len(data)}"
        for comp, v in zip(fn.inputs if fn is not None else (), data):  # gradio validates files before any handler
            model = getattr(comp, "data_model", None)
            if model is not None and v is not None and not isinstance(v, (dict, list)):
                what = getattr(comp, "label", None) or type(comp).__name__.lower()
                return f"{what} must be a file object ({{\"path\": …}} or an upload), got {type(v).__name__}"
        return None

    def _fn(self, path: str, payload: dict):
        blocks = self.blocks
        if blocks is None:
            return None
        if path.startswith("/gradio_api/queue/join") or path == "/gradio_api/run/predict":
            index = payload.get("fn_index")
            if index is None:
                name = payload.get("api_name")
                return next((f for f in blocks.fns.values() if name and f.api_name == name.lstrip("/")), None)
            if isinstance(index, bool) or not isinstance(index, int) or index not in blocks.fns:
                return f"unknown event {str(index)[:20]!r}"
            return blocks.fns[index]
        name = path.rsplit("/", 1)[-1]
        return next((f for f in blocks.fns.values() if f.api_name == name), None)

    @staticmethod
    async def _refuse(send, message: str) -> None:
        body = json.dumps({"error": message, "detail": message}).encode()
        await send({"type": "http.response.start", "status": 422,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
