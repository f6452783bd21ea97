"""The two ways a chapter run or a book build fails; the CLI maps them to distinct exit codes."""


class ParameterError(ValueError):
    """A source, parameter name, value or profile that does not fit: found before anything runs."""


class NotebookError(RuntimeError):
    """A notebook that could not be executed, or a book that could not be built."""
