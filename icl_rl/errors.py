"""The project's own exception type: every bad input ends in one of these."""


class IclRlError(ValueError):
    """A clear, user-facing error: says what is wrong (file, field) and how to fix it.

    The CLI prints its message on one line and exits with status 2; library callers can catch it.
    """
