"""API tests: the app in-process (its lifespan and an ASGI client), on SQLite and PostgreSQL."""
