"""One exception type for mistakes a user can fix, so the CLI and the app can show a short message."""


class EBMError(ValueError):
    """A user-facing error: bad input, a bad file, an unknown name. The message is the whole story."""
