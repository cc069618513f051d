"""Errors of the stores that a person must read: an engine or bucket that cannot be used, and why."""


class EngineError(RuntimeError):
    """A vector engine cannot be reached or used; the message names the backend and the setting."""
