"""Errors a user can cause. Tools print their message alone (no traceback) and exit 2."""


class PpiseError(Exception):
    """Base class: the message must name the file, config key or value at fault."""


class ConfigError(PpiseError):
    """A bad config file, override, key, type or component name."""


class DataError(PpiseError):
    """A missing dataset folder, unreadable image or empty split."""


class TrainingError(PpiseError):
    """Training cannot go on (degenerate clustering, non-finite loss, unwritable output)."""
