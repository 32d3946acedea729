"""Unit tests: pure functions and files, no service running."""
