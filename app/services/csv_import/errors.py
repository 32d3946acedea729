"""The import's permanent failure, shared by the kind, its params and both loaders.

A neutral home: the loaders raise it and the kind reports it, so neither loader imports the other.
"""


class ImportFailed(Exception):
    """The data cannot be imported as asked (bad record, changed file...): retrying will not help."""
