"""The one exception sgafast raises for bad input: its message says what to do."""


class SgafastError(Exception):
    """A user-facing error (bad file, bad parameter); the CLI prints it without a traceback."""
