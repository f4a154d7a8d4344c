"""Errors that are reported to the user as one line, before any model is loaded."""


class PromptscaleError(Exception):
    """Base class: a problem the user can fix (config, data, unsupported combination)."""


class ConfigError(PromptscaleError):
    """An unknown name, a wrong value or an unsupported method x family x task combination."""


class DataError(PromptscaleError):
    """A missing split file, a malformed line or a label outside the task's set (file and line named)."""
