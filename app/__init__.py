"""Task State Manager: pausable, resumable, cancellable long-running data work."""

__version__ = "0.1.0"
