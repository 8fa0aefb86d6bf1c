"""Errors toolrail turns into one clear line for the user."""


class ToolrailError(Exception):
    """Base for errors that carry a user-facing message."""


class ModelUnavailable(ToolrailError):
    """No model can answer (no key, endpoint unreachable, recording does not cover the prompt)."""


class ConfigError(ToolrailError):
    """A setting or flag is invalid."""
