"""The app as a person uses it, in a real browser (issue #21): requests per action, uploads, time to
result, and what an idle page costs next to a bare Gradio page.

    python benchmarks/browser.py [--idle-minutes 5] [--url http://127.0.0.1:7860/] [--verbose]

Starts `python app.py` on a free port (or uses --url) and drives Debian's Chromium (headless,
software rendering) through Playwright:

1. Journey before drawing, on a fresh page: Sample (64 steps), Compose (load a recipe, run it),
   Inpaint (random test digit, erase its lower half, fill), Denoise, OOD check and Classify (each on a
   random test digit), Landscape (Step, Play for 4 s, Pause).
2. Real mouse strokes (page.mouse down/move/up) on every drawing pad: the Sample start image, the
   Compose sketch, the Inpaint digit and mask, Denoise, OOD check and Classify.
3. The same actions again, now with the drawings as their inputs.

Per action it prints the requests the page sent from the click until the result showed and the page
had been quiet for 3.5 s: all of them; the uploads (POST /gradio_api/upload); the downloads (result
files, as many as streamed frames arrived, so they vary with the machine's speed, and page assets
loaded on first use); timer ticks (as many as fit the time the action took); and the rest (the
action's event calls and their streams). Times, from the start of the click: "click" until
Playwright had clicked (it waits until the element is visible, stable and free to take the click),
"sent" until the action's first event request left the page, "shown" until its result showed (the
text changed and the component's progress overlay went away). Target: the rest is the same before
and after drawing, and nothing is uploaded.

4. Idle: the journeyed page (back on the Train tab) and a bare two-tab gr.Blocks page, open side by
   side in the same browser, left alone for --idle-minutes; then a fresh app page and a fresh bare
   page the same way. Per page: its renderer's CPU (100% = one core; the renderer is found by a short
   busy loop run in the page), RSS first/last/max, and requests. The browser and GPU processes are
   shared by both pages and printed as one figure. Targets: app ≤ 1.5× bare CPU, RSS growth < 100 MB.

The machine is shared: compare figures measured side by side in one run; counts and CPU seconds are
robust, wall-clock latencies are not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import time
import urllib.request
from collections import Counter
from urllib.parse import urlparse

import _repo  # noqa: F401  (puts the repository on sys.path: `python benchmarks/<name>.py` works)
from app_latency import start_app, wait_for_page

sys.path.insert(0, str(_repo.ROOT / "tests"))
from pads import MASK, SEVEN, stroke  # noqa: E402  (the browser tests' strokes: the same drawing measured)

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright never downloads a browser here
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
VIEW = {"width": 1400, "height": 1100}
CLK = os.sysconf("SC_CLK_TCK")
STEPS = 64  # Sample steps
COMPOSE_STEPS = 60
QUIET_S = 3.5  # an action ends when its result shows and the page has sent nothing for this long: a
# chained event (.then, .success) starts when the one before it ends, up to ~3 s after its result showed


# --- Chromium processes (from /proc) ------------------------------------------------------------------
def chromium_procs() -> dict[int, str]:
    """pid → kind (renderer, gpu-process, utility, browser, …) of the Chromium processes below us."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
            except OSError:
                continue
    out, todo = {}, [os.getpid()]
    while todo:
        for c in kids.get(todo.pop(), []):
            todo.append(c)
            try:
                with open(f"/proc/{c}/cmdline", "rb") as f:
                    args = b" ".join(f.read().split(b"\0")).split()  # Chromium rewrites its argv as one string
            except OSError:
                continue
            if args and b"chrom" in args[0]:
                out[c] = next((a.split(b"=", 1)[1].decode() for a in args if a.startswith(b"--type=")), "browser")
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except OSError:
        return 0.0


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0.0


def renderer_of(page) -> int:
    """The pid of the renderer process that runs ``page``: the one whose CPU time grows while the
    page spins for 0.6 s (twice, to be sure: other pages' timers cost far less)."""
    for _ in range(3):
        renderers = [p for p, kind in chromium_procs().items() if kind == "renderer"]
        before = {p: cpu_s(p) for p in renderers}
        page.evaluate("() => { const t = performance.now(); while (performance.now() - t < 600) {} }")
        grew = sorted(renderers, key=lambda p: cpu_s(p) - before[p], reverse=True)
        if grew and cpu_s(grew[0]) - before[grew[0]] >= 0.3:
            return grew[0]
    raise RuntimeError("could not find the page's renderer process")


# --- requests -------------------------------------------------------------------------------------------
class Recorder:
    """Every request a page sends: (time, method, path, event name or None). Event calls are named
    from the app's /config ("elem_id.trigger"); timer ticks end in ".tick"."""

    def __init__(self, page, events: dict[int, str] | None = None):
        self.rows: list[tuple[float, str, str, str | None]] = []
        self.events = events or {}
        self.open: dict[object, int] = {}  # request → its row, until its response has been read to the end
        self.last = time.monotonic()  # when a request last started or ended
        page.on("request", self._on)
        page.on("requestfinished", self._off)
        page.on("requestfailed", self._off)

    def _off(self, req) -> None:
        self.open.pop(req, None)
        self.last = time.monotonic()

    def _on(self, req) -> None:
        path, name = urlparse(req.url).path, None
        if req.method == "POST" and (path.endswith("/queue/join") or "/run/" in path):
            try:
                fn = json.loads(req.post_data or "{}").get("fn_index")
            except (ValueError, TypeError):
                fn = None
            name = self.events.get(fn, f"fn {fn}")
        self.open[req] = len(self.rows)
        self.rows.append((time.monotonic(), req.method, path, name))
        self.last = time.monotonic()

    def mark(self) -> int:
        return len(self.rows)

    def busy(self, mark: int = 0) -> bool:
        """Whether a request sent since ``mark`` is still open (an event's stream ends with its event)."""
        return any(i >= mark for i in self.open.values())

    def since(self, mark: int) -> dict:
        rows = self.rows[mark:]
        uploads = sum(1 for _, m, p, _ in rows if m == "POST" and p.endswith("/upload"))
        files = sum(1 for _, m, p, _ in rows if m == "GET" and re.search(r"/file[=/]|^/assets/", p))
        ticks = sum(1 for *_, e in rows if e and e.endswith(".tick"))
        events = [(t, e) for t, _, _, e in rows if e and not e.endswith(".tick")]
        paths = Counter(f"{m} {re.sub(r'/file[=/].*', '/file=…', p)}" for _, m, p, _ in rows)
        return {"requests": len(rows), "uploads": uploads, "files": files, "ticks": ticks, "calls": len(events),
                "rest": len(rows) - uploads - files - ticks, "first_event_t": events[0][0] if events else None,
                "paths": dict(paths.most_common(8)), "events": dict(Counter(e for _, e in events))}


def event_names(url: str) -> dict[int, str]:
    """fn_index → "elem_id.trigger" (or "type#id.trigger") of every event in the app's /config."""
    with urllib.request.urlopen(url.rstrip("/") + "/config", timeout=60) as r:
        config = json.load(r)
    comps = {c["id"]: c for c in config.get("components", [])}

    def name(d: dict) -> str:
        if not d["targets"] or d["targets"][0][0] not in comps:  # .then()/.success() of another event
            return f"fn {d.get('trigger_after')}.{d['targets'][0][1] if d['targets'] else 'then'}"
        i, trigger = d["targets"][0]
        return f"{comps[i].get('props', {}).get('elem_id') or comps[i]['type'] + '#' + str(i)}.{trigger}"

    return {d["id"]: name(d) for d in config.get("dependencies", [])}


# --- page helpers ---------------------------------------------------------------------------------------
def nap(page, seconds: float) -> None:
    """Sleep while Playwright keeps delivering the page's events (time.sleep would hold them back)."""
    page.wait_for_timeout(max(1, int(seconds * 1000)))


def text(page, selector: str) -> str:
    loc = page.locator(selector)
    return loc.first.inner_text(timeout=2000) if loc.count() else ""


def wait(page, done, timeout: float) -> float | None:
    """The time.monotonic() when done() became true, or None after ``timeout`` seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if done():
                return time.monotonic()
        except Exception:  # noqa: BLE001, S110 (a node being re-rendered: ask again)
            pass
        nap(page, 0.1)
    return None


def settle(page, rec: Recorder, mark: int | None = None, quiet_s: float = QUIET_S, limit: float = 60) -> None:
    """Wait until the requests sent since ``mark`` (default: any from now on) have ended and the page has
    sent nothing for ``quiet_s`` (at most ``limit`` seconds): chained events (.then, .success) start
    only when the event before them ends, which can be seconds after its result shows."""
    mark = rec.mark() if mark is None else mark
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit and (rec.busy(mark) or time.monotonic() - rec.last < quiet_s):
        nap(page, 0.2)


def open_tab(page, rec: Recorder, name: str) -> None:
    mark = rec.mark()
    page.get_by_role("tab", name=name).click()
    nap(page, 0.5)
    settle(page, rec, mark)


BUSY = "(s) => [...document.querySelectorAll(s + ' .wrap.default')].some(w => !w.classList.contains('hide'))"


def changed(page, selector: str, pattern: str = ""):
    """A done() for an action: the text in ``selector`` differs from now, matches ``pattern``, and the
    component shows no progress overlay (while it does, its text can still be the old result's)."""
    before = text(page, selector)
    return lambda: ((now := text(page, selector)) != before and re.search(pattern, now) is not None
                    and not page.evaluate(BUSY, selector))


def act(page, rec: Recorder, name: str, click, done=None, timeout: float = 120, window: float = 0) -> dict:
    """Run ``click()``; time until ``done()``; the requests until the page is quiet (or for a fixed
    ``window`` of seconds, for actions that keep the page busy on purpose)."""
    m, t0 = rec.mark(), time.monotonic()
    click()  # Playwright first waits until the element is visible, stable and free to receive the click
    click_s = time.monotonic() - t0
    shown = wait(page, done, timeout) if done else None
    if window:
        nap(page, max(0.0, window - (time.monotonic() - t0)))
    else:
        settle(page, rec, m)
    row = {"action": name, **rec.since(m), "click_s": click_s, "shown_s": shown and shown - t0,
           "timed_out": bool(done) and shown is None}
    row["sent_s"] = row.pop("first_event_t") - t0 if row.get("first_event_t") else None
    return row


def fill_number(page, selector: str, value: int) -> None:
    """Type ``value`` into a number field and keep it there past the tab's own refresh of its settings."""
    box = page.locator(f"{selector} input")
    for _ in range(4):
        box.fill(str(value))
        box.press("Tab")
        nap(page, 1.0)
        if box.input_value() == str(value):
            return


def step_of(page) -> int:
    m = re.search(r"step ([\d,]+)", text(page, "#landscape-status"))
    return int(m.group(1).replace(",", "")) if m else -1


# --- the journey ----------------------------------------------------------------------------------------
def sample(page, rec: Recorder, drawn: bool) -> list[dict]:
    open_tab(page, rec, "Sample")
    fill_number(page, "#sample-steps", STEPS)
    done = changed(page, "#sample-status", rf"(?s)(?=.*done)(?=.*step {STEPS} of {STEPS})")
    name = f"Sample, {STEPS} steps" + (" (from the drawing)" if drawn else "")
    return [act(page, rec, name, page.locator("#sample-run").click, done)]


def compose(page, rec: Recorder, drawn: bool) -> list[dict]:
    open_tab(page, rec, "Compose")
    recipe = page.locator("#compose-recipes button").first
    name = recipe.inner_text().strip()
    rows = [act(page, rec, f"Compose: load recipe '{name}'", recipe.click,
                changed(page, "#compose-status", "Cached result"))]
    fill_number(page, "#compose-steps", COMPOSE_STEPS)
    rows.append(act(page, rec, f"Compose and sample, {COMPOSE_STEPS} steps", page.locator("#compose-run").click,
                    changed(page, "#compose-status", "done")))
    return rows


def random_digit(page, rec: Recorder, prefix: str) -> dict:
    return act(page, rec, f"{prefix}: random test digit", page.locator(f"#{prefix}-random").click,
               changed(page, f"#{prefix}-note", "test digit #"))


def inpaint(page, rec: Recorder, drawn: bool) -> list[dict]:
    open_tab(page, rec, "Inpaint")
    rows = []
    if not drawn:  # after drawing, the drawn digit and the painted mask are the inputs
        rows.append(random_digit(page, rec, "inpaint"))
        rows.append(act(page, rec, "Inpaint: erase bottom half", page.locator("#inpaint-erase-bottom").click))
    rows.append(act(page, rec, "Inpaint, 4 fills", page.locator("#inpaint-run").click,
                    changed(page, "#inpaint-result", "kept_exactly")))
    return rows


def judge(page, rec: Recorder, drawn: bool, tab: str, prefix: str, name: str, result: str, pattern: str) -> list:
    """A drawing tab's one action: a random test digit first (before drawing), then its Run button."""
    open_tab(page, rec, tab)
    rows = [] if drawn else [random_digit(page, rec, prefix)]
    rows.append(act(page, rec, name, page.locator(f"#{prefix}-run").click, changed(page, result, pattern)))
    return rows


def landscape(page, rec: Recorder, drawn: bool) -> list[dict]:
    """Step, Play (a fixed 4 s window: the page streams while it trains), Pause; and how many steps
    still ran in the 5 s after Pause showed."""
    open_tab(page, rec, "Landscape")
    status = "#landscape-status"
    rows = [act(page, rec, "Landscape: Step", page.locator("#landscape-step").click, changed(page, status, r"step \d"))]
    rows.append(act(page, rec, "Landscape: Play (4 s window)", page.locator("#landscape-play").click,
                    changed(page, status, "Running"), window=4))
    rows.append(act(page, rec, "Landscape: Pause", page.locator("#landscape-pause").click,
                    changed(page, status, "Paused")))
    paused_at = step_of(page)
    nap(page, 5)
    rows[-1]["steps_after_pause"] = step_of(page) - paused_at
    return rows


def journey(page, rec: Recorder, drawn: bool) -> list[dict]:
    """Every tab's main action, in the order a visitor might try them."""
    return (sample(page, rec, drawn) + compose(page, rec, drawn) + inpaint(page, rec, drawn)
            + judge(page, rec, drawn, "Denoise", "denoise", "Denoise", "#denoise-summary", r"\S")
            + judge(page, rec, drawn, "OOD check", "ood", "OOD check", "#ood-verdict", "distribution")
            + judge(page, rec, drawn, "Classify (JEM)", "classify", "Classify", "#classify-answer", r"p = \d")
            + landscape(page, rec, drawn))


def draw_everywhere(page, rec: Recorder) -> list[dict]:
    """A real stroke on every drawing pad; the input pads' previews must show the drawing."""
    open_tab(page, rec, "Sample")
    rows = [act(page, rec, "Sample: start from an image",
                page.get_by_role("radio", name="an image (draw or upload)").check)]
    rows.append(act(page, rec, "stroke: Sample start image", lambda: stroke(page, "#sample-start-pad", SEVEN, steps=4)))
    open_tab(page, rec, "Compose")
    page.get_by_text("Sketch pad (for the sketch expert)").click()
    nap(page, 1)
    rows.append(act(page, rec, "stroke: Compose sketch", lambda: stroke(page, "#compose-sketch", SEVEN, steps=4)))
    for tab, prefix in (("Inpaint", "inpaint"), ("Denoise", "denoise"), ("OOD check", "ood"),
                        ("Classify (JEM)", "classify")):
        open_tab(page, rec, tab)
        rows.append(act(page, rec, f"stroke: {tab} pad → preview",
                        lambda p=prefix: stroke(page, f"#{p}-pad", SEVEN, steps=4),
                        changed(page, f"#{prefix}-note", "your drawing"), timeout=60))
        if prefix == "inpaint":
            rows.append(act(page, rec, "stroke: Inpaint mask", lambda: stroke(page, "#inpaint-mask", MASK, steps=4)))
    return rows


# --- idle pages -----------------------------------------------------------------------------------------
def idle_side_by_side(pages: dict, minutes: float, every: float = 10.0) -> dict:
    """Leave ``pages`` (name → (page, Recorder)) alone for ``minutes``: per page its renderer's CPU%
    (one core = 100) and RSS (MB, sampled every ``every`` s) and its requests; the other Chromium
    processes (browser, GPU, utilities), shared by the pages, as one CPU figure."""
    first = next(iter(pages.values()))[0]
    pids = {name: renderer_of(page) for name, (page, _) in pages.items()}
    if len(set(pids.values())) < len(pids):
        print(f"warning: pages share a renderer process: {pids}", flush=True)
    nap(first, 5)  # past the busy loop that found the renderers
    procs = chromium_procs()
    c0, marks = {p: cpu_s(p) for p in procs}, {n: rec.mark() for n, (_, rec) in pages.items()}
    rss = {n: [rss_mb(pid)] for n, pid in pids.items()}
    t0 = time.monotonic()
    while (left := minutes * 60 - (time.monotonic() - t0)) > 0:
        nap(first, min(every, left))
        for n, pid in pids.items():
            rss[n].append(rss_mb(pid))
    wall = time.monotonic() - t0
    used = {p: cpu_s(p) - c0[p] for p in procs}
    out = {"wall_s": wall, "shared_cpu_pct": 100 * sum(v for p, v in used.items() if p not in pids.values()) / wall}
    for n, (page, rec) in pages.items():
        r = rss[n]
        out[n] = {"cpu_pct": 100 * used.get(pids[n], 0.0) / wall, "rss_first": r[0], "rss_last": r[-1],
                  "rss_max": max(r), "requests": rec.since(marks[n])["requests"],
                  "visible": page.evaluate("document.visibilityState")}
    return out


def open_page(browser, url: str, ready: str | None = None, events: dict | None = None):
    """A page in a browser context of its own (so it never shares a renderer with another page)."""
    page = browser.new_context(viewport=VIEW).new_page()
    page.set_default_timeout(60_000)
    rec = Recorder(page, events)
    page.goto(url)
    if ready:
        page.locator(ready).wait_for(state="visible")
        wait(page, page.locator(ready).is_enabled, 60)  # enabled once the page has its session id
    nap(page, 2)
    settle(page, rec, len(rec.rows), quiet_s=3)
    return page, rec


def close_page(page) -> None:
    context = page.context
    page.close()
    context.close()


# --- servers --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_bare():
    """The reference page: a bare gr.Blocks with two tabs and a button each (served from this process)."""
    import gradio as gr

    with gr.Blocks() as demo:
        for name in ("One", "Two"):
            with gr.Tab(name):
                box = gr.Textbox(label="text")
                gr.Button("Go").click(lambda s: s, box, box)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    return demo, demo.local_url


# --- report ---------------------------------------------------------------------------------------------
def fmt_s(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def print_actions(title: str, rows: list[dict], verbose: bool) -> None:
    print(f"\n{title}")
    print(f"{'action':40} {'requests':>8} {'uploads':>7} {'downloads':>9} {'ticks':>5} {'rest':>4} {'click s':>7} "
          f"{'sent s':>6} {'shown s':>7}")
    for r in rows:
        extra = (" (not shown in time)" if r["timed_out"] else "") + (
            f"  [{r['steps_after_pause']} steps ran after Pause showed]" if "steps_after_pause" in r else "")
        print(f"{r['action'][:40]:40} {r['requests']:8d} {r['uploads']:7d} {r['files']:9d} {r['ticks']:5d} "
              f"{r['rest']:4d} {r['click_s']:7.2f} {fmt_s(r['sent_s']):>6} {fmt_s(r['shown_s']):>7}{extra}")
        if verbose:
            print(f"{'':6}{r['events']} {r['paths']}")


def compare(before: list[dict], after: list[dict]) -> bool:
    """Per action run in both phases: its requests other than downloads and timer ticks, and its event
    calls, before and after drawing; True if they are equal and nothing was uploaded."""
    print("\nSame action before → after drawing: requests (without downloads and ticks), event calls, uploads")
    after_of = {r["action"].replace(" (from the drawing)", ""): r for r in after}
    ok = True
    for b in before:
        a = after_of.get(b["action"])
        if a is None:
            continue
        same = a["rest"] == b["rest"] and a["calls"] == b["calls"] and a["uploads"] == b["uploads"] == 0
        ok &= same
        print(f"{b['action'][:40]:40} {b['rest']:3d} → {a['rest']:<3d}  calls {b['calls']} → {a['calls']}  "
              f"uploads {b['uploads']} → {a['uploads']}  {'equal' if same else 'DIFFERENT'}")
    return ok


def print_idle(title: str, r: dict) -> bool:
    """One idle window's table; True if the app page met the targets (≤ 1.5× bare CPU, < 100 MB growth)."""
    print(f"\n{title} ({r['wall_s'] / 60:.1f} min, side by side)")
    print(f"{'page':22} {'renderer CPU %':>14} {'× bare':>6} {'RSS first':>9} {'last':>6} {'max':>6} "
          f"{'growth MB':>9} {'requests':>8} visibility")
    bare = r["bare"]["cpu_pct"]
    ok = True
    for name, p in r.items():
        if not isinstance(p, dict):
            continue
        ratio = p["cpu_pct"] / bare if bare else float("inf")
        growth = p["rss_last"] - p["rss_first"]
        if name != "bare":
            ok &= ratio <= 1.5 and growth < 100
        print(f"{name:22} {p['cpu_pct']:14.1f} {ratio:6.2f} {p['rss_first']:9.0f} {p['rss_last']:6.0f} "
              f"{p['rss_max']:6.0f} {growth:+9.0f} {p['requests']:8d} {p['visible']}")
    print(f"{'browser + GPU + other':22} {r['shared_cpu_pct']:14.1f}   (shared by both pages)")
    return ok


def measure(browser, url: str, bare_url: str, minutes: float, verbose: bool) -> bool:
    """The journey, the drawing, the journey again; then the two idle windows. True if every target is met."""
    ready = "#train-start"
    events = event_names(url)
    page, rec = open_page(browser, url, ready, events)
    before = journey(page, rec, drawn=False)
    print_actions("Before drawing (a fresh page)", before, verbose)
    drawing = draw_everywhere(page, rec)
    print_actions("Drawing: one mouse stroke per pad", drawing, verbose)
    after = journey(page, rec, drawn=True)
    print_actions("After drawing (the drawings are the inputs)", after, verbose)
    ok = compare(before, after) and not any(r["timed_out"] for r in before + drawing + after)
    ok &= all(r["uploads"] == 0 for r in drawing)
    sys.stdout.flush()

    open_tab(page, rec, "Train")
    nap(page, 10)
    bare = open_page(browser, bare_url)
    ok &= print_idle("Idle after the journey", idle_side_by_side({"app after journey": (page, rec), "bare": bare},
                                                                  minutes))
    close_page(page)
    close_page(bare[0])
    sys.stdout.flush()
    pages = {"app fresh": open_page(browser, url, ready, events), "bare": open_page(browser, bare_url)}
    ok &= print_idle("Idle, fresh pages", idle_side_by_side(pages, minutes))
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle-minutes", type=float, default=5.0, help="length of each of the two idle windows")
    ap.add_argument("--url", default=None, help="an app already running (default: start `python app.py`)")
    ap.add_argument("--verbose", action="store_true", help="also print each action's requests by path")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    proc, url = (None, args.url) if args.url else start_app(free_port())
    t0 = time.monotonic()
    try:
        if proc is not None:
            print(f"app served {wait_for_page(url, proc):.1f} s after `python app.py` started "
                  f"(EBM_PLAY_THREADS={os.environ.get('EBM_PLAY_THREADS', 'unset')})", flush=True)
        bare_demo, bare_url = serve_bare()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            print(f"Chromium {browser.version}, headless, {' '.join(ARGS)}", flush=True)
            ok = measure(browser, url, bare_url, args.idle_minutes, args.verbose)
            browser.close()
        bare_demo.close()
    finally:
        if proc is not None and proc.poll() is not None:
            print(f"the app exited during the run (code {proc.returncode})")
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    print(f"\n{'all targets met' if ok else 'TARGETS MISSED'} · {(time.monotonic() - t0) / 60:.1f} min")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
