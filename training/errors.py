"""The one exception the CLI turns into a clear message and a non-zero exit."""


class TrainingError(Exception):
    """A problem the user can fix (missing data, bad file); printed without a traceback."""


def one_line(text: str) -> str:
    """``text`` as one line of plain text: line breaks become spaces, and other control
    characters (an ANSI escape or a newline in a file name, a library's multi-line message)
    are written as escapes, so a refusal is always exactly one ``error:`` line."""
    return "".join(
        " " if char in "\r\n\t" else char if char.isprintable() else ascii(char)[1:-1]
        for char in text
    )
