"""Business logic: no HTTP here."""
