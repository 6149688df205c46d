"""Sessions of a multi-user playground, and the rules for forgetting them.

A browser keeps its session id in localStorage (the app's ``gr.BrowserState``), so a reload or a
second tab finds the same runs; an API caller passes any id of 8–64 letters, digits, ``-`` or
``_``. The server keeps sessions in memory, so a restart forgets them.

Anyone can make new sessions, so forgetting follows two rules:

- **idle sessions** (nothing trained) are shed oldest first once there are ``max_idle`` of them;
- **keepers** (a session with a run, a trained model or uploaded images) are never shed to make room for new idle
  ones. There are at most ``max_keepers``; a new keeper takes the place of the keeper seen least
  recently that has no live run and has not been seen for ``keeper_grace_s``, else it is refused.

So a stranger sending thousands of fresh ids only pushes out other idle sessions.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass, field

from .data import Dataset
from .errors import EBMError
from .models import EnergyModel

SESSION_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")


def new_session_id() -> str:
    """A 128-bit random id (what a new browser gets)."""
    return secrets.token_urlsafe(16)


def check_session(sid) -> str:
    if not isinstance(sid, str) or not SESSION_RE.fullmatch(sid):
        raise EBMError("no valid session id: reload the page (API: pass session=<8-64 random letters, digits, - or _>)")
    return sid


@dataclass
class Session:
    """One user's state on the server."""

    id: str
    runs: dict = field(default_factory=dict)  # kind ("image", "landscape") → the session's latest Run
    trained: EnergyModel | None = None  # a copy of a run's weights that the other tabs use
    trained_label: str = ""
    data: Dataset | None = None  # images the person uploaded (one set; the playground bounds all of them)
    choices: dict = field(default_factory=dict)  # small things the tabs remember (the current model, clicked points…)
    seen: float = field(default_factory=time.monotonic)

    @property
    def keeper(self) -> bool:
        """It holds work that must not be lost to make room for strangers."""
        return bool(self.runs) or self.trained is not None or self.data is not None

    @property
    def live(self) -> bool:
        return any(r.live for r in self.runs.values())


class SessionStore:
    """Sessions by id, within the two bounds described in the module docstring."""

    def __init__(self, max_idle: int = 1000, max_keepers: int = 200, keeper_grace_s: float = 3600.0):
        self.max_idle, self.max_keepers, self.keeper_grace_s = max_idle, max_keepers, keeper_grace_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, sid) -> Session:
        """The session ``sid``, made if new (shedding the oldest idle sessions past ``max_idle``)."""
        sid = check_session(sid)
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                idle = [x for x in self._sessions.values() if not x.keeper]
                if len(idle) >= self.max_idle:
                    for old in sorted(idle, key=lambda x: x.seen)[: len(idle) - self.max_idle + 1]:
                        del self._sessions[old.id]
                s = self._sessions[sid] = Session(sid)
            s.seen = time.monotonic()
            return s

    def peek(self, sid) -> Session | None:
        """The session if it exists, without making one (for polls)."""
        if not isinstance(sid, str):
            return None
        with self._lock:
            return self._sessions.get(sid)

    def keep(self, s: Session, give) -> None:
        """Give ``s`` work to hold (``give(s)`` sets a run or a model) once there is room for one more
        keeper. Refuses when every keeper is busy or recent: the server holds as much work as it may."""
        with self._lock:
            if s.keeper and self._sessions.get(s.id) is s:
                give(s)
                return
            keepers = [x for x in self._sessions.values() if x.keeper and x is not s]
            if len(keepers) >= self.max_keepers:
                now = time.monotonic()
                stale = sorted((x for x in keepers if not x.live and now - x.seen > self.keeper_grace_s),
                               key=lambda x: x.seen)
                if not stale:
                    raise EBMError(f"the server holds the work of {self.max_keepers} sessions, its limit: "
                                   "try again later")
                del self._sessions[stale[0].id]
            give(s)
            self._sessions[s.id] = s  # (back) in the store, should it have been shed while idle

    def all(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)
