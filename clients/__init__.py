"""Python client for Task State Manager."""
