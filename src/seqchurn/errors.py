"""The one exception type for bad input; entry points turn it into exit code 2."""


class DataError(ValueError):
    """Bad input that the user can fix: the message is one line saying what and how."""


def check_settings(values: dict, positive_int: bool, prefix: str = "data.") -> None:
    """Integers where integers belong (positive ones when `positive_int`), else DataError."""
    for name, value in values.items():
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if not is_int or value < (1 if positive_int else 0):
            kind = "a positive integer" if positive_int else "an integer >= 0"
            raise DataError(f"{prefix}{name} must be {kind}, got {value!r}")


def check_fraction(name: str, value, upper_open: bool = False) -> None:
    """A number in [0, 1] ([0, 1) when `upper_open`), else DataError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (0 <= value < 1 if upper_open else 0 <= value <= 1):
        bound = "[0, 1)" if upper_open else "[0, 1]"
        raise DataError(f"{name} must be a number in {bound}, got {value!r}")
