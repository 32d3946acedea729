"""CORS for browser clients on other origins (tus-js-client, Uppy): ``TSM_CORS_ORIGINS``.

    browser ── OPTIONS + Origin + Access-Control-Request-Method ──▶ CORSMiddleware answers (the
            preflight never reaches the tus router's own OPTIONS, which describes the tus server)
    browser ── POST / HEAD / PATCH / DELETE / GET + Origin ──▶ route ──▶ response + Access-Control-*

Nothing is installed when no origin is configured: then responses carry no CORS headers at all
and browsers keep every other origin out, as before. Keys travel in ``Authorization``, never in
cookies, so credentials stay off.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

# What a tus client reads from responses, plus what downloads and request tracing answer with.
EXPOSED_HEADERS = (
    "Upload-Offset",
    "Location",
    "Upload-Length",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Expires",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "ETag",
    "Content-Range",
    "Content-Length",
    "Accept-Ranges",
    "X-Request-ID",
)
# Starlette matches requested headers by exact name: every Upload-* header tus defines is listed.
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Checksum",
    "X-HTTP-Method-Override",
    "X-Request-ID",
    "X-Requested-With",
    "Range",
    "If-Range",
    "Last-Event-ID",
)
ALLOWED_METHODS = ("GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS")
PREFLIGHT_MAX_AGE = 600


def install_cors(app: FastAPI, origins: list[str]) -> None:
    """Add CORSMiddleware for ``origins``; call it after the middlewares it should wrap."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        allow_credentials=False,
        max_age=PREFLIGHT_MAX_AGE,
    )
