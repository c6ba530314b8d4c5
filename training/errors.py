"""The one exception the CLI turns into a clear message and a non-zero exit."""


class TrainingError(Exception):
    """A problem the user can fix (missing data, bad file); printed without a traceback."""
