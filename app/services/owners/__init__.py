"""Owners: API keys, per-owner limits, and the data namespaces their tables live in."""
