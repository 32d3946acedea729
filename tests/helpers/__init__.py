"""Shared test helpers, imported by the tests (``conftest.py`` holds only fixtures).

database  the per-session PostgreSQL database: its URL, DSNs, cleaning between tests
apps      Settings for tests and the app in-process (lifespan + ASGI client), polling a task
server    a real uvicorn process on a loopback port (LiveServer), polling it, reading its log
kinds     task kinds used only by the tests (loaded through ``TSM_KIND_MODULES``)
tus       tus requests and headers for the upload tests
imports   CSV makers, import settings and table readers for the import tests
exports   source tables in an owner's namespace and the CSV an export must give
deploy    reading the Dockerfile as the container engine would
"""
