"""TEMPORARY: the old ``Registry`` interface over :class:`ebm_play.playground.Playground`, for the tabs
not yet moved to module-level endpoints. Removed once every tab takes the playground."""

from __future__ import annotations

from ebm_play.playground import RANDOM_MODEL, TRAINED_MODEL, Playground  # noqa: F401
from ebm_play.sessions import SESSION_RE, check_session, new_session_id  # noqa: F401


class _OldSession:
    def __init__(self, s):
        self._s = s

    def __getattr__(self, name):
        return getattr(self._s, name)

    @property
    def model_key(self):
        return self._s.choices.get("model", "")

    @property
    def run(self):
        return self._s.runs.get("image")


class Registry:
    def __init__(self, pg: Playground):
        self.pg = pg
        for name in ("models", "default_model", "device", "tmp", "problems", "classifier"):
            setattr(self, name, getattr(pg, name))
        self.max_runs = pg.limits.running

    @property
    def untrained(self):
        return self.pg.untrained

    def session(self, sid):
        return _OldSession(self.pg.sessions.get(sid))

    def peek(self, sid):
        s = self.pg.sessions.peek(sid)
        return None if s is None else _OldSession(s)

    def model_names(self, s):
        return self.pg.model_names(None if s is None else getattr(s, "_s", s))

    def current_model(self, sid):
        return self.pg.current_model(sid)

    def use_model(self, sid, key):
        return self.pg.use_model(sid, key)

    def data(self):
        return self.pg.data()

    def active_runs(self):
        return self.pg.active_runs()
