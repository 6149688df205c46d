"""One exception type for mistakes a user can fix, so the CLI and the app can show a short message."""

from __future__ import annotations


class EBMError(ValueError):
    """A user-facing error: bad input, a bad file, an unknown name. The message is the whole story."""


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages that quote what a user gave: a
    value of 10**400 or a 100 kB string must not turn one line into a page."""
    try:
        text = repr(value)
    except ValueError:  # ints past sys.get_int_max_str_digits() cannot be printed
        text = f"<a {value.bit_length()}-bit whole number>" if isinstance(value, int) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"
