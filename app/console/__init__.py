"""The web console's files: Jinja2 page templates and the plain JavaScript modules they load.

Pages are shells rendered by app/routers/console.py; everything they show comes from the public
HTTP API, fetched by static/js/*.js in the browser (the same calls any client makes).
"""

from __future__ import annotations

from pathlib import Path

CONSOLE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = CONSOLE_DIR / "templates"
STATIC_DIR = CONSOLE_DIR / "static"
