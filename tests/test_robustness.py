"""Hostile input through every public door (API endpoints called directly, the CLI), sessions that
must not see each other, paths a caller must not choose, and a save killed half-way.

The endpoint lists come from the running app's own API description, so a new endpoint or
parameter is fuzzed without touching this file. Each bad value must end in either a correct
result or one short message; afterwards the server still answers ordinary requests.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import httpx
import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from test_app import new_session

import ebm_play
from ebm_play import cli
from ui import boundary as B

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BAD_NUMBERS = [float("nan"), float("inf"), -1e9, 1e9, "ten", None]  # (−inf: the same check as inf and −1e9)
CRASH = "has not enabled verbose error reporting"  # what gradio_client reports for an uncaught exception
STARTS = {"/train_start": ("/train_stop", {}), "/landscape_train_start": ("/landscape_reset", {"clear_points": True}),
          "/landscape_objectives_start": ("/landscape_objectives_stop", {})}


def call(client, api: str, kwargs: dict, timeout: float = 60.0):
    """('ok', result) or ('error', message); a hang past ``timeout`` fails the test."""
    job = client.submit(api_name=api, **kwargs)
    try:
        return "ok", job.result(timeout=timeout)
    except AppError as e:
        return "error", str(e)


def assert_clear(outcome, what: str):
    kind, value = outcome
    if isinstance(value, dict):  # the REST API's error event
        value = value.get("error")
    if kind == "error":
        assert value and CRASH not in value, f"{what}: crashed instead of a message ({value!r})"
        assert len(value) <= 400 and "Traceback" not in value, f"{what}: message not short: {value!r}"


def digit_png(path, size=140):
    img = Image.new("L", (size, size), 255)
    ImageDraw.Draw(img).ellipse((size // 4, size // 6, size * 3 // 4, size * 5 // 6), outline=0, width=size // 12)
    img.save(path)
    return str(path)


def hostile_images(d) -> dict[str, str]:
    """Every kind of picture a public page receives, written to files under ``d``."""
    base = Image.open(digit_png(d / "digit.png"))
    out = {}
    for mode in ("1", "P", "RGBA", "CMYK", "I;16", "LA", "F"):
        img = base.convert(mode) if mode != "I;16" else base.convert("I").point(lambda v: v * 257).convert("I;16")
        ext = "jpg" if mode == "CMYK" else "tiff" if mode == "F" else "png"
        img.save(d / f"mode-{mode.replace(';', '')}.{ext}")
        out[f"mode {mode}"] = str(d / f"mode-{mode.replace(';', '')}.{ext}")
    Image.new("L", (200, 200), 255).save(d / "empty.png")
    out["empty drawing"] = str(d / "empty.png")
    Image.new("RGBA", (200, 200), (0, 0, 0, 0)).save(d / "transparent.png")
    out["transparent layer"] = str(d / "transparent.png")
    Image.new("L", (1, 1), 0).save(d / "tiny.png")
    out["1×1"] = str(d / "tiny.png")
    strip = Image.new("L", (6000, 20), 255)
    ImageDraw.Draw(strip).line([(100, 10), (5900, 10)], fill=0, width=6)
    strip.save(d / "strip.png")
    out["6000×20 strip"] = str(d / "strip.png")
    raw = (d / "digit.png").read_bytes()
    (d / "truncated.png").write_bytes(raw[: len(raw) // 2])
    out["truncated PNG"] = str(d / "truncated.png")
    (d / "notes.png").write_bytes(b"these are my notes, not a picture\n" * 10)
    out["text named .png"] = str(d / "notes.png")
    (d / "zeros.png").write_bytes(b"")
    out["empty file"] = str(d / "zeros.png")
    Image.new("1", (20000, 20000), 0).save(d / "bomb.png")  # 400 megapixels in ~50 kB
    out["decompression bomb"] = str(d / "bomb.png")
    return out


def hostile_weights(d) -> dict[str, str]:
    """Weight files that must be refused with a message naming the problem, nothing executed."""
    good = ebm_play.save_model(ebm_play.CNNEnergy(width=4), d / "good.safetensors")
    sd = {k: v.clone().contiguous() for k, v in ebm_play.load_model(good).state_dict().items()}
    meta = {"ebm_play": json.dumps({"format": 1, "kind": "cnn", "config": {"width": 4}})}
    out = {}

    class Boom:
        def __reduce__(self):
            return (open, (str(d / "pwned"), "w"))

    (d / "pickle.safetensors").write_bytes(pickle.dumps(Boom()))
    out["pickle"] = "pickle.safetensors"
    torch.save({"w": torch.zeros(1)}, d / "torchsave.safetensors")
    out["torch.save zip"] = "torchsave.safetensors"
    data = good.read_bytes()
    (d / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    out["truncated"] = "truncated.safetensors"
    (d / "header.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{" + b" " * 100)
    out["oversized header"] = "header.safetensors"
    save_file({**sd, "head.bias": torch.tensor([float("nan")])}, str(d / "nan.safetensors"), metadata=meta)
    out["NaN tensor"] = "nan.safetensors"
    save_file({**sd, "head.bias": torch.zeros(7)}, str(d / "shape.safetensors"), metadata=meta)
    out["wrong shape"] = "shape.safetensors"
    save_file({**sd, "head.bias": torch.zeros(1, dtype=torch.int64)}, str(d / "dtype.safetensors"), metadata=meta)
    out["wrong dtype"] = "dtype.safetensors"
    absurd = {"ebm_play": json.dumps({"format": 1, "kind": "cnn", "config": {"width": 10**9}})}
    save_file(sd, str(d / "absurd.safetensors"), metadata=absurd)
    out["absurd metadata"] = "absurd.safetensors"
    return {k: str(d / v) for k, v in out.items()}


@pytest.fixture(scope="module")
def api(client) -> dict:
    return client.view_api(return_format="dict", print_info=False)["named_endpoints"]


def upload(url: str, path: str) -> dict:
    """Upload a file the way a browser does; the FileData that refers to it."""
    with open(path, "rb") as f:
        r = httpx.post(f"{url}gradio_api/upload", files={"files": (os.path.basename(path), f)})
    r.raise_for_status()
    return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}


def rest_call(url: str, api_name: str, data: list, timeout: float = 60.0):
    """One call through gradio's REST API (what ``curl`` does), which, unlike gradio_client, can
    send NaN and ±Infinity: ('ok', outputs) or ('error', message or None)."""
    body = json.dumps({"data": data}, allow_nan=True)
    r = httpx.post(f"{url}gradio_api/call{api_name}", content=body, headers={"content-type": "application/json"})
    if r.status_code != 200:
        return "error", r.text[:400]
    event_id, event, deadline = r.json()["event_id"], None, time.monotonic() + timeout
    with httpx.stream("GET", f"{url}gradio_api/call{api_name}/{event_id}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            assert time.monotonic() < deadline, f"{api_name} still running after {timeout} s"
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = json.loads(line[5:].strip() or "null")
                return ("ok", payload) if event == "complete" else ("error", payload)
    return "error", None


SHORT = {"steps": 5, "chains": 2}


def defaults(api_name: str, params: list[dict], picture: dict, sid: str) -> list:
    """Positional arguments for one ordinary, short call: each parameter's default (a few chains and
    steps where work is asked for), a session, a digit."""
    data = []
    for p in params:
        n, t = p["parameter_name"], p["python_type"]["type"]
        if n in SHORT:
            data.append(SHORT[n])
        elif n == "session":
            data.append(sid)
        elif t.startswith("dict(background"):
            data.append({"background": picture, "layers": [], "composite": None, "id": None})
        elif n == "image" and t == "filepath":
            data.append(picture)
        elif n == "files":
            data.append([picture])
        else:
            data.append(p.get("parameter_default"))
    return data


def in_parallel(job, items: list, workers: int = 4) -> list:
    """``job`` over ``items`` from a few threads at once (calls of strangers arrive together anyway);
    the results in order."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(job, items))


def test_every_numeric_parameter_of_every_endpoint_refuses_or_caps_bad_numbers(client, api, url, tmp_path):
    picture = upload(url, digit_png(tmp_path / "digit.png"))

    def one(case) -> str | None:
        name, i, bad = case
        sid = new_session()
        data = defaults(name, api[name]["parameters"], picture, sid)
        data[i] = bad
        kind, value = rest_call(url, name, data)
        try:
            assert_clear((kind, value), f"{name}({api[name]['parameters'][i]['parameter_name']}={bad!r})")
        except AssertionError as e:
            return str(e).splitlines()[0]
        finally:
            if name in STARTS and kind == "ok":
                stop, extra = STARTS[name]
                client.predict(sid, **extra, api_name=stop)

    cases = [(name, i, bad) for name, ep in api.items() for i, p in enumerate(ep["parameters"])
             if p["python_type"]["type"] in ("int", "float") for bad in BAD_NUMBERS]
    starts = [c for c in cases if c[0] in STARTS]  # one at a time: a run started must not meet the run cap
    failures = [f for f in [*map(one, starts), *in_parallel(one, [c for c in cases if c not in starts])] if f]
    assert not failures, "\n".join(failures)
    assert len(cases) > 300  # the API description really was walked
    energy, _, _ = client.predict(None, handle_file(tmp_path / "digit.png"), api_name="/score")  # still serving
    assert math.isfinite(energy)


@pytest.mark.parametrize("api_name,param", [
    ("/score", "image"), ("/classify", "image"), ("/ood_score", "image"), ("/inpaint", "image"),
    ("/denoise", "image"), ("/sample", "start_image"), ("/ood_batch", "files"), ("/compose", "sketch"),
])
def test_hostile_pictures_through_the_api(api, url, tmp_path, api_name, param):
    picture = upload(url, digit_png(tmp_path / "digit.png"))
    params = api[api_name]["parameters"]
    names = [p["parameter_name"] for p in params]
    i = names.index(param)
    editor = params[i]["python_type"]["type"].startswith("dict(background")
    results = {}
    for what, path in hostile_images(tmp_path).items():
        f = upload(url, path)
        data = defaults(api_name, params, picture, new_session())
        data[i] = ({"background": f, "layers": [], "composite": None, "id": None}
                   if editor else [f] if param == "files" else f)
        extra = {"/sample": dict(start="image", steps=5, chains=2), "/inpaint": dict(keep_half="top", steps=5),
                 "/compose": dict(experts=[{"expert": "sketch"}], steps=5, chains=2)}.get(api_name, {})
        for k, v in extra.items():
            data[names.index(k)] = v
        kind, value = rest_call(url, api_name, data)
        assert_clear((kind, value), f"{api_name} with {what}")
        results[what] = kind
    # The readable pictures give results; what is not a picture (or too big to open) is refused.
    for what in ("mode 1", "mode P", "mode RGBA", "mode CMYK", "mode I;16", "mode LA", "mode F", "6000×20 strip"):
        assert results[what] == "ok", what
    for what in ("truncated PNG", "text named .png", "empty file", "decompression bomb"):
        assert results[what] == "error", what


def test_hostile_weight_files_through_app_and_cli(client, tmp_path, capsys):
    files = hostile_weights(tmp_path)
    png = digit_png(tmp_path / "digit.png")
    messages = {}
    for what, path in files.items():
        kind, msg = call(client, "/sample", dict(session=new_session(), steps=2, chains=2, model_file=handle_file(path)))
        assert kind == "error", what
        assert_clear((kind, msg), f"/sample model_file={what}")
        kind, msg2 = call(client, "/train_start", dict(session=new_session(), resume=handle_file(path)))
        assert kind == "error", what
        assert_clear((kind, msg2), f"/train_start resume={what}")
        capsys.readouterr()
        assert cli.main(["score", "--model", path, "--in", png]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert Path(path).name in err or "safetensors" in err, err  # about the weights, not the picture
        messages[what] = msg
    assert not (tmp_path / "pwned").exists()  # nothing in a file was ever executed
    # Each message names the problem.
    expect = {"pickle": "pickle", "torch.save zip": "pickle/zip", "truncated": "truncated|cannot read|not a valid",
              "oversized header": "header", "NaN tensor": "NaN", "wrong shape": "shape", "wrong dtype": "dtype",
              "absurd metadata": "width"}
    for what, pattern in expect.items():
        assert re.search(pattern, messages[what]), (what, messages[what])


def test_sessions_do_not_see_each_other(client, app):
    a, b = new_session(), new_session()
    tiny = dict(kind="cnn", width=4, digits=[0, 1], batch_size=8, sampler_steps=2, buffer_size=32, fresh_every=20,
                fresh_steps=2, max_steps=30)
    client.predict(a, **tiny, api_name="/train_start")
    try:
        deadline = time.monotonic() + 30
        while client.predict(a, api_name="/train_status")["state"] != "finished":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        client.predict(a, api_name="/train_use")
        with pytest.raises(AppError, match="no training run"):
            client.predict(b, api_name="/train_use")
        assert client.predict(b, api_name="/train_status")["state"] == "none"
        with pytest.raises(AppError, match="no training run|nothing to save"):
            client.predict(b, api_name="/train_save")
        # A's trained model is A's: the same request names different models in the two sessions.
        ra = client.predict(session=a, steps=2, chains=2, model="trained in this session", api_name="/sample")
        with pytest.raises(AppError):
            client.predict(session=b, steps=2, chains=2, model="trained in this session", api_name="/sample")
        # Recordings are reached only through the unguessable id handed to their owner.
        record = ra[-1]["record"]  # outputs: grid, energy plot, result
        assert isinstance(record, str) and len(record) >= 12
        assert client.predict(record, api_name="/sample_files")[2]  # the owner gets the PNG
        with pytest.raises(AppError, match="no recording|expired"):
            client.predict(record[:-1] + ("A" if record[-1] != "A" else "B"), api_name="/sample_files")
    finally:
        call(client, "/train_stop", dict(session=a))
    # Session ids are long random tokens; short or odd ones are refused.
    for sid in ("x", "../../etc", "a" * 65, 12345678):
        with pytest.raises(AppError, match="session"):
            client.predict(sid, api_name="/train_status")


def test_no_endpoint_reads_a_path_the_caller_chose(api, app, url, tmp_path):
    assert not app.allowed_paths  # nothing beyond gradio's own upload and cache folders
    secret = tmp_path / "secret.safetensors"
    ebm_play.save_model(ebm_play.CNNEnergy(width=4), secret)
    for path in (str(secret), "/etc/passwd", os.path.abspath("weights/mnist.safetensors")):
        r = httpx.get(f"{url}gradio_api/file={path}")
        assert r.status_code in (403, 404), (path, r.status_code)
        for forged in ({"path": path, "meta": {"_type": "gradio.FileData"}}, {"url": f"file://{path}"}, path):
            for api_name, param in (("/score", "image"), ("/sample", "model_file"), ("/train_start", "resume")):
                params = api[api_name]["parameters"]
                data = defaults(api_name, params, None, new_session())
                data[[p["parameter_name"] for p in params].index(param)] = forged
                kind, msg = rest_call(url, api_name, data)
                assert kind == "error", (api_name, forged, msg)


@pytest.mark.parametrize("experts", [
    "not json", "[]", "{}", '"a string"', [1, 2], [{"expert": "gan"}], [{"expert": "ink", "weight": float("nan")}],
    [{"expert": "ink", "weight": float("inf")}], [{"expert": "ink", "target": -4}], [{"expert": "class", "label": 11}],
    [{"expert": "model", "model": "/etc/passwd"}], [{"expert": "model", "model": "../weights/mnist"}],
    [{"expert": "ink", "on": "yes"}], [{"expert": "symmetry"}] * 1000, [[[[[]]]]],
])
def test_hostile_expert_lists(api, url, experts):
    params = api["/compose"]["parameters"]
    data = defaults("/compose", params, None, new_session())
    data[[p["parameter_name"] for p in params].index("experts")] = experts
    kind, value = rest_call(url, "/compose", data)
    assert kind == "error" and value and value.get("error"), (experts, value)
    assert_clear((kind, value), f"/compose experts={str(experts)[:40]}")


KILLER = """
import sys, torch, ebm_play
m = ebm_play.CNNEnergy(width=64)
print("ready", flush=True)
while True:
    ebm_play.save_model(m, sys.argv[1])
"""


def test_a_save_killed_half_way_leaves_a_loadable_file(tmp_path):
    path = tmp_path / "model.safetensors"
    ebm_play.save_model(ebm_play.CNNEnergy(width=64), path)
    for delay in (0.05, 0.13, 0.31):
        p = subprocess.Popen([sys.executable, "-c", KILLER, str(path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "EBM_PLAY_THREADS": "1"})
        assert p.stdout.readline().strip() == "ready"
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert isinstance(ebm_play.load_model(path), ebm_play.CNNEnergy)  # the old or the new file, whole


@pytest.mark.parametrize("args,named", [
    (["--steps", "1000000000"], "steps"), (["--n", "1000000"], "n"), (["--steps", "nan"], "steps"),
    (["--step-size", "inf"], "step"), (["--n", "-3"], "n"), (["--noise", "-1"], "noise"),
    (["--temperature", "0"], "temperature"), (["--seed", "-1"], "seed"),
])
def test_cli_refuses_hostile_numbers_with_one_line(capsys, tmp_path, args, named):
    model = ebm_play.save_model(ebm_play.CNNEnergy(width=4), tmp_path / "m.safetensors")
    code = cli.main(["sample", "--model", str(model), "--out", str(tmp_path / "s.png"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (args, err)
    assert named in err and "unrecognized" not in err, (args, err)


def test_cli_reads_hostile_pictures_or_says_why(capsys, tmp_path):
    model = ebm_play.save_model(ebm_play.CNNEnergy(width=4), tmp_path / "m.safetensors")
    for what, path in hostile_images(tmp_path).items():
        capsys.readouterr()
        code = cli.main(["score", "--model", str(model), "--in", path])
        err = capsys.readouterr().err
        expected = 2 if what in ("truncated PNG", "text named .png", "empty file", "decompression bomb",
                                 "empty drawing", "transparent layer", "1×1") else 0
        assert code == expected, (what, code, err)
        if code == 2:
            assert err.count("\n") == 1 and "Traceback" not in err, (what, err)


def test_one_picture_for_many_users_is_written_once_and_whole(app, tmp_path):
    """Two requests that produce the same picture share gradio's cached file; it is never rewritten
    in place, so a download in progress cannot see it truncated."""
    from gradio import processing_utils

    img = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(img).ellipse((60, 40, 220, 240), outline=255, width=20)
    first = processing_utils.save_pil_to_cache(img, str(tmp_path), format="png")  # the app installed the fix
    before = os.stat(first)
    with open(first, "rb") as reader:  # a download in progress
        again = processing_utils.save_pil_to_cache(img, str(tmp_path), format="png")
        assert again == first and os.stat(again).st_ino == before.st_ino
        assert reader.read() == Path(first).read_bytes() and os.path.getsize(first) == before.st_size
    assert [p.name for p in Path(first).parent.iterdir()] == [Path(first).name]  # no staging files left


def test_a_rest_call_costs_gradio_one_small_session(app, url):
    """Each REST call without a session hash is a new gradio session. Gradio's own constructor
    rendered all 552 block configurations into it (25 ms and 2,750 objects per call, kept for
    10,000 sessions); the app makes them on demand, and the calls still work end to end."""
    import gc

    from gradio.state_holder import SessionState

    s = SessionState(app)
    assert s.config_values == {} and s.blocks_config.blocks.keys() == app.default_config.blocks.keys()
    key = next(k for k, b in app.blocks.items() if isinstance(b, gr.Number))
    s._update_value_in_config(key, 3.0)  # how gradio fills one in when a page updates it
    assert s.config_values[key]["props"]["value"] == 3.0
    gc.collect()
    before = len(gc.get_objects())
    sessions = [SessionState(app) for _ in range(50)]
    assert (len(gc.get_objects()) - before) / len(sessions) < 50
    http = httpx.Client(base_url=url, timeout=60)
    for i in range(3):  # plain REST calls, each a new gradio session
        r = http.post("/gradio_api/call/score", json={"data": [f"rest-session-{i:04d}", None]})
        stream = http.get(f"/gradio_api/call/score/{r.json()['event_id']}").text
        assert "event: error" in stream and "upload an image to score" in stream


# --- every event the page can send, hidden ones included ----------------------------------------------
def page_call(url: str, fn_index: int, data: list, queued: bool, timeout: float = 60.0):
    """One event as the page sends it (through the queue, or straight to /run/predict for the events
    that skip it): ('ok', outputs) or ('error', message)."""
    session_hash = "walk" + os.urandom(4).hex()
    body = json.dumps({"fn_index": fn_index, "data": data, "session_hash": session_hash, "trigger_id": None,
                       "event_data": {"index": [0, 0], "value": None}}, allow_nan=True)  # (a click's, ignored by others)
    headers = {"content-type": "application/json"}
    if not queued:
        r = httpx.post(f"{url}gradio_api/run/predict", content=body, headers=headers, timeout=timeout)
        payload = r.json()
        return ("ok", payload.get("data")) if r.status_code == 200 else ("error", payload.get("error"))
    r = httpx.post(f"{url}gradio_api/queue/join", content=body, headers=headers)
    if r.status_code != 200:
        return "error", r.json().get("error")
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session_hash},
                      timeout=timeout) as events:
        for line in events.iter_lines():
            msg = json.loads(line[5:]) if line.startswith("data:") else {}
            if msg.get("msg") == "process_completed":
                out = msg.get("output") or {}
                return ("ok", out.get("data")) if msg.get("success") else ("error", out.get("error"))
    return "error", None


def page_values(fn, names: list[str], specs: dict, sid: str) -> list:
    """What the page sends for ``fn`` before anyone touches it: each input component's value (a
    session id for the session), the function's default for an API-only parameter."""
    defaults = inspect.signature(fn.fn.endpoint).parameters
    out = []
    for comp, name in zip(fn.inputs, names):
        if isinstance(specs[name], (B.Session, B.AnySession)):
            out.append(sid)
        elif getattr(comp, "value", None) is not None:
            out.append(comp.value)
        else:
            d = defaults[name].default
            out.append(None if d is inspect.Parameter.empty else d)
    return out


def test_nan_through_every_event_the_page_can_send(app, url):
    """Issue #19: a hidden canvas-click event once took [NaN, NaN] points and its run rolled back
    forever. Every event (named or not), every checked parameter in turn, gets NaN where the page
    would send its value: each call ends in one short message naming what is wrong, and nothing runs."""
    cases = []
    for index, fn in app.fns.items():
        ep = fn.fn.endpoint
        specs = ep.specs
        names = [p for p in list(inspect.signature(ep).parameters)[1:] if p in specs]
        assert len(fn.inputs) <= len(names), f"{fn.name}: {len(fn.inputs)} inputs for {names}"
        names = names[:len(fn.inputs)]  # the rest keep their defaults
        base = page_values(fn, names, specs, new_session())
        for i, name in enumerate(names):
            if isinstance(specs[name], (B.Kept, B.Click, B.AnySession)) or isinstance(fn.inputs[i], gr.State):
                continue  # server-side state and click data (gradio's), and a session a bad id simply lacks
            data = list(base)
            data[i] = float("nan")
            cases.append((index, fn, name, data))

    def one(case) -> str | None:
        index, fn, name, data = case
        kind, message = page_call(url, index, data, fn.queue is not False)
        if kind != "error":
            return f"{fn.name}({name}=NaN): accepted"
        if not message or len(message) > 400 or "\n" in message or "unexpected error" in message:
            return f"{fn.name}({name}=NaN): {message!r}"

    failures = [f for f in in_parallel(one, cases) if f]
    assert not failures, "\n".join(failures)
    assert len(cases) > 150, len(cases)  # the page's events really were walked
    assert app.playground.active_runs() == 0  # nothing started
