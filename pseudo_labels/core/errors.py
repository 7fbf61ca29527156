"""User-facing errors.

Raise :class:`PseudoLabelsError` for bad input: the CLI prints its message on one
line (which file, what is wrong, what to do) and exits with status 2, without a
traceback unless ``--traceback`` or ``PSEUDO_LABELS_TRACEBACK=1`` is given.
"""


class PseudoLabelsError(Exception):
    """An error caused by the user's input or environment, with a message meant for them."""


class InputFileError(PseudoLabelsError):
    """A specific input file is missing, unreadable or malformed."""

    def __init__(self, path, problem: str, hint: str = ""):
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        msg = f"{self.path}: {problem}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)
