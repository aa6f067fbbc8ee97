"""The one error type for bad input: the CLI prints it as one line, anything else keeps its traceback."""


class ConfigError(ValueError):
    """An option, a file's content or a combination of them that cannot work; the message names the fix.

    A ValueError, so that callers of the Python API that catch ValueError keep working."""


class TrainingInterrupted(Exception):
    """Ctrl-C ended a run; its message says what was saved and how to continue."""
