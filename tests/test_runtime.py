import os
import threading

import numpy as np
import pytest
import torch

from ebm_play import runtime
from ebm_play.errors import EBMError


def test_seeds_are_checked_and_any_integer_type_works():
    cpu = torch.device("cpu")
    draws = [torch.rand(3, generator=runtime.make_generator(s, cpu)) for s in (7, np.int64(7), torch.tensor(7).item())]
    assert all(torch.equal(draws[0], d) for d in draws)
    for bad in (-1, 2**63, 1.5, "7", True, float("nan")):
        with pytest.raises(EBMError, match="seed must be a whole number"):
            runtime.make_generator(bad, cpu)


def test_job_threads_is_per_block():
    before = torch.get_num_threads()
    with runtime.job_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread priorities here")
def test_background_priority_lowers_only_the_calling_thread():
    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def worker():
        runtime.background_priority(10)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["nice"] == max(main, 10)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main


def test_background_jobs_wait_for_requests_in_flight_but_not_forever():
    fg = runtime.Foreground()
    done = threading.Event()

    def background():
        fg.wait_idle(max_wait=30)
        done.set()

    with fg.active():
        t = threading.Thread(target=background)
        t.start()
        assert not done.wait(0.2) and fg.busy == 1  # a request is in flight: the job waits
    assert done.wait(5)  # the request ended: the job goes on at once
    t.join()
    assert fg.busy == 0
    with pytest.raises(ValueError), fg.active():  # a failing request still ends its count
        raise ValueError
    assert fg.busy == 0
    with fg.active():
        fg.wait_idle(max_wait=0.05)  # constant load: the job still advances after max_wait
