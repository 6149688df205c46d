"""What one anonymous caller could do to the public server before, now checked against the real
server (conftest): a whole-app hang, memory kept by stopped runs, allocation before the run cap,
evicting another person's work. Bounds here are generous on purpose: they separate "answers" from
"hangs for minutes", not fast from slow."""

from __future__ import annotations

import gc
import json
import secrets
import subprocess
import sys
import threading
import time

import httpx
import pytest
from gradio_client.exceptions import AppError

import ebm_play
from ebm_play.runtime import trim_memory

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HEAVY = dict(kind="cnn", width=32, digits=list(range(10)), batch_size=512, sampler_steps=200, step_size=10.0,
             noise=0.005, alpha=0.1, lr=1e-4, buffer_size=1024, reinit=0.05, seed=0, fresh_every=0, fresh_steps=2,
             max_steps=0)  # about a minute per update on one core: the budget's heaviest kind of run


CALLERS = """
import json, sys, threading, httpx
url, session, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = []
def call():
    r = httpx.post(f"{url}gradio_api/call/train_pause", json={"data": [session]}, timeout=60)
    with httpx.stream("GET", f"{url}gradio_api/call/train_pause/{r.json()['event_id']}", timeout=60) as s:
        for line in s.iter_lines():
            if line.startswith("event:") and line[6:].strip() in ("complete", "error"):
                out.append(line[6:].strip())
                return
threads = [threading.Thread(target=call) for _ in range(n)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(out))
"""


def sid() -> str:
    return "public-" + secrets.token_hex(6)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def rest(url: str, api_name: str, data: list, timeout: float = 30.0):
    """Send one call and read its result, as curl would."""
    r = httpx.post(f"{url}gradio_api/call/{api_name}", json={"data": data}, timeout=timeout)
    r.raise_for_status()
    with httpx.stream("GET", f"{url}gradio_api/call/{api_name}/{r.json()['event_id']}", timeout=timeout) as s:
        for line in s.iter_lines():
            if line.startswith("event:") and line[6:].strip() in ("complete", "error"):
                return line[6:].strip()
    return None


def wait_state(client, session, states, timeout=60):
    deadline = time.monotonic() + timeout
    while (st := client.predict(session, api_name="/train_status"))["state"] not in states:
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    return st


def test_45_pauses_of_a_heavy_run_leave_the_server_answering(client, url):
    a = sid()
    client.predict(a, **HEAVY, api_name="/train_start")
    try:
        wait_state(client, a, ("running",))
        time.sleep(1)  # well into its first update
        # the 45 callers are another process, as they would be: client threads in this one would take
        # the interpreter lock from the server they measure
        callers = subprocess.Popen([sys.executable, "-c", CALLERS, url, a, "45"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        t0 = time.monotonic()
        r = httpx.get(f"{url}config", timeout=20)
        assert r.status_code == 200 and time.monotonic() - t0 < 2
        results = json.loads(callers.communicate(timeout=60)[0])
        assert len(results) == 45 and results.count("complete") == 1  # one pause; 44 "not running" answers
        t0 = time.monotonic()
        st = client.predict(a, api_name="/train_stop")
        assert st["state"] == "stopped" and time.monotonic() - t0 < 5
    finally:
        try:
            client.predict(a, api_name="/train_stop")
        except AppError:
            pass


def test_stopped_runs_give_their_replay_buffers_back(client, app):
    big = dict(HEAVY, width=8, batch_size=8, sampler_steps=2, buffer_size=100_000)  # 100,000 chains: 314 MB each
    gc.collect()
    trim_memory()
    before = rss_mb()
    for _ in range(6):
        s = sid()
        client.predict(s, **big, api_name="/train_start")
        wait_state(client, s, ("running",))
        client.predict(s, api_name="/train_stop")
        app.playground.sessions.get(s).runs["image"].join(30)
    gc.collect()
    trim_memory()
    grown = rss_mb() - before
    assert grown < 300, f"RSS grew by {grown:.0f} MB"


def test_ten_concurrent_starts_never_build_more_trainers_than_the_cap(client, app, monkeypatch):
    built, original = [], ebm_play.runs.Trainer
    monkeypatch.setattr(ebm_play.runs, "Trainer", lambda *a, **kw: (built.append(1), original(*a, **kw))[1])
    tiny = dict(HEAVY, width=4, batch_size=8, sampler_steps=2, buffer_size=64)
    sessions = [sid() for _ in range(10)]
    outcomes = []

    def start(s):
        try:
            outcomes.append(client.predict(s, **tiny, api_name="/train_start")["state"])
        except AppError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=start, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    started = [o for o in outcomes if o in ("starting", "running")]
    assert len(started) == app.playground.limits.running and len(outcomes) == 10
    assert all("server is busy" in o for o in outcomes if o not in started)
    time.sleep(1)
    assert len(built) == len(started)
    for s in sessions:
        try:
            client.predict(s, api_name="/train_stop")
        except AppError:
            pass


def test_a_thousand_strangers_do_not_evict_a_trained_model(client, url):
    victim = sid()
    client.predict(victim, **dict(HEAVY, width=4, batch_size=8, sampler_steps=2, buffer_size=64, max_steps=5),
                   api_name="/train_start")
    wait_state(client, victim, ("finished",))
    client.predict(victim, api_name="/train_use")
    with httpx.Client(timeout=30) as h:
        for i in range(1000):
            r = h.post(f"{url}gradio_api/call/train_status", json={"data": [f"stranger-{i:06d}-{secrets.token_hex(3)}"]})
            assert r.status_code == 200
    _, _, result = client.predict(victim, "langevin", 3, None, None, None, 2, 0, model="trained in this session",
                                  api_name="/sample")
    assert result["model"].startswith("trained in this session")


def metadata_only(path, kind: str, config: dict):
    """A ~150-byte weight file whose metadata asks for a huge model and which holds no tensors."""
    import json
    import struct

    meta = {"ebm_play": json.dumps({"format": 1, "kind": kind, "config": config})}
    header = json.dumps({"__metadata__": meta}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return str(path)


def test_ten_hostile_uploads_do_not_grow_the_server(client, tmp_path):
    from gradio_client import handle_file

    cases = [("jem", {"width": 256, "n_classes": 500000}), ("rbm", {"visible": 60000, "hidden": 8192}),
             ("mlp2d", {"hidden": 16000}), ("classifier", {"width": 3000}), ("cnn", {"width": 256}),
             ("jem-ensemble", {"members": 16, "width": 256}), ("jem", {"width": 32, "n_classes": -3}),
             ("rbm", {"visible": 10}), ("jem", {"n_classes": 0}), ("cnn", {"width": 10**400})]
    gc.collect()
    trim_memory()
    before = rss_mb()
    for i, (kind, config) in enumerate(cases):
        f = handle_file(metadata_only(tmp_path / f"hostile-{i}.safetensors", kind, config))
        for api_name, kw in (("/train_start", dict(session=sid(), resume=f)),
                             ("/sample", dict(session=sid(), steps=2, chains=2, model_file=f))):
            with pytest.raises(AppError) as e:
                client.predict(**kw, api_name=api_name)
            assert f"hostile-{i}" in str(e.value) and len(str(e.value)) < 300, str(e.value)
    gc.collect()
    trim_memory()
    grown = rss_mb() - before
    assert grown < 100, f"RSS grew by {grown:.0f} MB over {len(cases)} hostile uploads"


def test_ten_hostile_archive_uploads_do_not_grow_the_server(client, tmp_path):
    """/train_data (the Train tab's 'Your images'): bombs of each kind, each refused with one line
    that names the file's member, and resident memory grows by less than 100 MB over ten."""
    import io
    import zipfile

    import numpy as np
    from gradio_client import handle_file
    from PIL import Image

    def zip_of(name, members):
        with zipfile.ZipFile(tmp_path / name, "w", zipfile.ZIP_DEFLATED) as z:
            for member, data in members.items():
                z.writestr(member, data)
        return tmp_path / name

    pixels = io.BytesIO()
    Image.new("1", (6000, 6000)).save(pixels, "PNG")  # 36 megapixels in a few kB
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 28, 28), np.uint8))
    header["shape"] = (10**9, 28, 28)  # an npz that claims 10⁹ images
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    ratio = zip_of("ratio.zip", {"ratio/a.png": bytes(9 * 2**20)})
    cases = [(ratio, "a.png"), (zip_of("pixels.zip", {"p/bomb.png": pixels.getvalue()}), "bomb.png"),
             (zip_of("claims.npz", {"x.npy": npy.getvalue()}), "claims.npz"),
             (zip_of("nested.zip", {"n/inner.zip": ratio.read_bytes()}), "inner.zip"),
             (zip_of("text.zip", {"t/readme.png": b"not a picture at all"}), "readme.png")]

    def refused(i: int) -> None:
        path, member = cases[i % len(cases)]
        with pytest.raises(AppError) as e:
            client.predict(session=sid(), file=handle_file(str(path)), labels_from_folders=True, api_name="/train_data")
        assert member in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 300, str(e.value)

    for i in range(len(cases)):  # warm up: the first of each loads PIL's decoders, the queue's workers …
        refused(i)
    gc.collect()
    trim_memory()
    before = rss_mb()
    for i in range(10):
        refused(i)
    gc.collect()
    trim_memory()
    grown = rss_mb() - before
    assert grown < 100, f"RSS grew by {grown:.0f} MB over 10 hostile archive uploads"
