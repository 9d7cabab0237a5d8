"""The one exception type for problems in what the user gave us.

Anything raised as `InputError` is shown to the user as a single line (CLI exit code 2, a message beside
the field in the dashboard). The message must name the file or parameter and say how to fix it.
"""


class InputError(ValueError):
    """A bad file, layer name, parameter or dataset entry: the user can fix it, we cannot."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of a library's exception, for a one-line InputError."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]
