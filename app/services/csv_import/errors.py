"""The import's permanent failure, shared by the kind, its params and both loaders.

A neutral home: the loaders raise it and the kind reports it, so neither loader imports the other.
"""


class ImportFailed(Exception):
    """The data cannot be imported as asked (bad record, changed file...): retrying will not help."""


class TypeFallback(ImportFailed):
    """A value that does not fit its column's *inferred* type: the import widens the column and
    starts over (if it escapes, it is an ordinary permanent failure)."""

    def __init__(self, column: str, type_name: str, line: int, value: str, reason: str) -> None:
        self.column, self.type_name, self.line, self.value, self.reason = column, type_name, line, value, reason
        super().__init__(f"line {line}, column {column}: {reason}")
