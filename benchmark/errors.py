"""Errors that end a command with a one-line message and exit status 2."""


class UserError(Exception):
    """Bad input from the user: a name, a grid, a path or a budget.

    The CLI prints ``str(error)`` on one line and exits with status 2; nothing
    else in the suite catches it.
    """


class CellError(Exception):
    """A failure inside one grid cell: recorded in the cell result, the grid goes on."""
