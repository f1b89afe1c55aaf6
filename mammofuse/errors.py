"""Errors a user can act on. The CLI prints them as one line, never a traceback."""


class MammofuseError(Exception):
    """A problem with the user's input, files or environment, explained in one line."""


class InputFileError(MammofuseError):
    """A file that cannot be read as a mammogram; the message names the file."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class OutputError(MammofuseError):
    """An output that cannot be written (a folder, read-only, disk full...); the message names it."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: cannot write ({problem})")
        self.path = path
        self.problem = problem
