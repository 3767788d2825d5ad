"""The one exception type for problems a user can fix; the CLI prints it as one line."""


class KitError(Exception):
    """A user-facing problem: the message names the file, the row and what was expected."""
