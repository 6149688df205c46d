"""Forgetting sessions: strangers' fresh ids push out only idle sessions, never one holding work."""

import time

import pytest

from ebm_play import EBMError
from ebm_play.sessions import SessionStore, check_session, new_session_id


@pytest.mark.parametrize("sid", ["abcdefgh\n", "short", "x" * 65, "has space!", None, 12345678, "é" * 10])
def test_odd_ids_are_refused(sid):
    with pytest.raises(EBMError, match="no valid session id"):
        check_session(sid)


def test_new_ids_are_valid_and_random():
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100 and all(check_session(i) for i in ids)


def test_a_thousand_fresh_ids_do_not_evict_a_session_holding_work():
    store = SessionStore(max_idle=50, max_keepers=5)
    victim = store.get("victim-session")
    store.keep(victim, lambda s: setattr(s, "trained", object()))
    store.get("idle-but-old")
    for i in range(1000):
        store.get(f"stranger-{i:06d}")
    assert store.peek("victim-session") is victim and store.peek("idle-but-old") is None
    assert len(store) == 51


def test_keepers_are_bounded_and_only_stale_ones_give_way():
    store = SessionStore(max_keepers=2, keeper_grace_s=3600)
    for name in ("keeper-one", "keeper-two"):
        store.keep(store.get(name), lambda s: setattr(s, "trained", object()))
    with pytest.raises(EBMError, match="holds the work of 2 sessions"):
        store.keep(store.get("keeper-three"), lambda s: setattr(s, "trained", object()))
    assert store.peek("keeper-three").trained is None
    store.peek("keeper-one").seen = time.monotonic() - 7200  # gone for two hours
    store.keep(store.get("keeper-three"), lambda s: setattr(s, "trained", object()))
    assert store.peek("keeper-one") is None and store.peek("keeper-three").trained is not None
