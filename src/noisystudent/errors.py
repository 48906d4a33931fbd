"""One exception type for mistakes a user can fix (config, paths, data).

The CLI prints these as one line and exits with code 2; anything else is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message names the thing and the fix."""


class ConfigError(UserError):
    """A bad config value; `key` is the dotted name of the offending field."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}")
