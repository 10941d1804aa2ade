"""The one exception type for bad input; entry points turn it into exit code 2."""


class DataError(ValueError):
    """Bad input that the user can fix: the message is one line saying what and how."""
