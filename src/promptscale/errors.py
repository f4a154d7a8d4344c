"""Errors that are reported to the user as one line, before any model is loaded."""


class PromptscaleError(Exception):
    """Base class: a problem the user can fix (config, data, unsupported combination)."""


class ConfigError(PromptscaleError):
    """An unknown name, a wrong value or an unsupported method x family x task combination."""


class DataError(PromptscaleError):
    """A missing split file, a malformed line or a label outside the task's set (file and line named)."""


def listing(items, limit: int = 12, quote: bool = True) -> str:
    """``items`` for an error message, at most ``limit`` of them, so that a message stays one short line."""
    items = [repr(i) if quote else str(i) for i in items]
    shown = ", ".join(items[:limit])
    return f"{shown}, ... {len(items) - limit} more" if len(items) > limit else shown


def check_min(node, key: str, minimum, where: str = "method") -> None:
    """ConfigError unless ``node[key] >= minimum`` (named ``where.key`` in the message)."""
    if node[key] < minimum:
        raise ConfigError(f"{where}.{key} must be >= {minimum}, got {node[key]}")


def check_choice(what: str, value, allowed) -> None:
    """ConfigError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{what}={value!r} is not one of {listing(allowed, quote=False)}")
