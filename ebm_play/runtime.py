"""Device choice and the thread policy.

Torch defaults to one OpenMP thread per core and spinning idle workers. On a 2-core machine a
trainer thread and a sampler thread that each do that slow each other down many times over, so
the project sets the policy once, before any heavy work:

- ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP workers sleep instead of spinning (set before torch loads);
- one inter-op thread: parallelism comes from intra-op threads only;
- intra-op threads = ``EBM_PLAY_THREADS`` or the number of cores; a process that runs several
  jobs at once (the app) gives each job its own count with :func:`job_threads` (torch's setting
  is per thread);
- background jobs (the app's training runs) lower their own thread's priority with
  :func:`background_priority`, so a request never waits behind a trainer for a core, and pause
  between steps while requests are in flight (:data:`FOREGROUND`), so it never waits behind a
  trainer for Python's interpreter lock either (which thread priorities cannot arrange);
- under torchrun the N processes on a machine share its cores: each defaults to cores // N;
- at most :data:`THREADS_PER_CORE` × cores threads. ``torch.set_num_threads(n)`` starts n OpenMP
  workers at once, each stack two memory mappings; past ``vm.max_map_count`` (65,530 by default,
  about 32,700 threads: 30,000 run, 33,000 end in a segmentation fault) thread creation fails
  inside libgomp and the process dies with exit code 139. Far fewer already only slow torch down.
"""

from __future__ import annotations

import contextlib
import operator
import os
import threading
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from .errors import EBMError, shown  # noqa: E402

THREADS_PER_CORE = 4
_configured = False
_trimmer: threading.Thread | None = None
_lock = threading.Lock()


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def processes_per_machine() -> int:
    """How many processes torchrun started on this machine (1 outside torchrun)."""
    for name in ("LOCAL_WORLD_SIZE", "WORLD_SIZE"):
        try:
            n = int(os.environ.get(name, "0"))
        except ValueError:
            continue
        if n > 0:
            return n
    return 1


def thread_count(threads: int | None = None) -> int:
    """The intra-op thread count to use: ``threads``, else ``$EBM_PLAY_THREADS``, else the cores
    shared out among torchrun's processes; EBMError past :data:`THREADS_PER_CORE` × cores."""
    source, n = "threads", threads
    if n is None:
        raw = os.environ.get("EBM_PLAY_THREADS", "").strip()
        source = "EBM_PLAY_THREADS"
        try:
            n = int(raw) if raw else 0
        except ValueError:
            raise EBMError(f"EBM_PLAY_THREADS must be a whole number of threads, got {shown(raw)}") from None
        if n == 0:
            return max(1, cpu_count() // processes_per_machine())
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise EBMError(f"{source} must be a whole number of at least 1, got {shown(n)}")
    cap = THREADS_PER_CORE * cpu_count()
    if n > cap:
        raise EBMError(f"{source} {shown(n)} is more than this machine can use: it has {cpu_count()} cores, "
                       f"so at most {cap} threads")
    return n


def configure_threads(threads: int | None = None) -> int:
    """Apply the thread policy once per process; returns the intra-op thread count in force.

    The default is all cores, shared out among torchrun's processes on this machine: 2 ranks on
    2 cores get 1 thread each (all cores each would oversubscribe them, several times slower)."""
    global _configured
    with _lock:
        n = thread_count(threads)
        torch.set_num_threads(n)
        if not _configured:
            with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
                torch.set_num_interop_threads(1)
            _configured = True
        return n


@contextlib.contextmanager
def job_threads(n: int):
    """Run a block with ``n`` intra-op threads (torch's setting is per thread since 2.0)."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def background_priority(nice: int = 10) -> None:
    """Lower the calling thread's CPU priority (Linux nice value, per thread): a background trainer
    then takes the cores only when interactive requests leave them idle. Best effort elsewhere."""
    with contextlib.suppress(AttributeError, OSError):  # no setpriority, or no per-thread ids
        tid = threading.get_native_id()
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, max(now, nice)))


class Foreground:
    """Counts interactive requests in flight, so that background jobs in the same process can step
    aside: a trainer thread at nice 10 still takes the interpreter lock (GIL) as often as a
    request thread, and under load every request pays for it. Requests wrap themselves in
    :meth:`active`; a background job calls :meth:`wait_idle` between its steps."""

    def __init__(self):
        self._n = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def active(self):
        with self._cond:
            self._n += 1
        try:
            yield
        finally:
            with self._cond:
                self._n -= 1
                if self._n == 0:
                    self._cond.notify_all()

    @property
    def busy(self) -> int:
        return self._n

    def wait_idle(self, max_wait: float) -> None:
        """Return when no request is in flight, or after ``max_wait`` seconds (so a background
        job under constant load still advances, at least one step per ``max_wait``)."""
        with self._cond:
            self._cond.wait_for(lambda: self._n == 0, timeout=max_wait)


FOREGROUND = Foreground()


def trim_memory() -> None:
    """Hand freed memory back to the OS now (glibc's malloc_trim; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def return_freed_memory(every_s: float = 10.0, arenas: int = 2) -> None:
    """For a long-lived multi-threaded process (the app): cap glibc's malloc arenas and hand freed
    memory back to the OS every ``every_s`` seconds. glibc keeps freed tensors' memory cached per
    thread arena, so the resident size of a server that samples on fresh threads creeps up request
    after request although nothing leaks (benchmarks/memory.py). Best effort: a no-op off glibc."""
    global _trimmer
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        return
    with _lock:
        if _trimmer is not None:
            return

        def trim():
            while True:
                time.sleep(every_s)
                trim_memory()

        _trimmer = threading.Thread(target=trim, name="ebm-malloc-trim", daemon=True)
        _trimmer.start()


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` pick CUDA when present, else the CPU; an unavailable CUDA is a user error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise EBMError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'auto'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EBMError("device 'cuda' asked for, but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise EBMError(f"unsupported device {device!r}: use 'cpu', 'cuda' or 'auto'")
    return dev


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A private random stream, so a seed gives the same chains whatever else the process does."""
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
        return g
    try:
        s = None if isinstance(seed, bool) else operator.index(seed)  # int, numpy or torch integers
    except TypeError:
        s = None
    if s is None or not 0 <= s < 2**63:
        raise EBMError(f"seed must be a whole number from 0 to 2**63 − 1, got {seed!r}")
    g.manual_seed(s)
    return g
