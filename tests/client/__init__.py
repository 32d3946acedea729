"""Client tests: the Python client and the ``tsm`` command against the app or a live server."""
