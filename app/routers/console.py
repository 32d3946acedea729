"""The web console: ``/`` and ``/ui/...``, HTML shells plus static JavaScript, no build step.

    GET /                 tasks list (live)          GET /ui/start   start-a-task form
    GET /ui/tasks         the same list              GET /ui/files   files + browser upload (tus)
    GET /ui/tasks/{id}    one task: events, error, result and reject downloads
    GET /ui/data          import wizard (file → preview → table) and export
    GET /ui/static/...    js/ modules, vendor/tus.min.js, style.css

The pages hold no data: their scripts call the public API with the key kept in session storage,
so the console needs nothing from the services a client would not have. None of this is in the
OpenAPI spec: it is not API.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app import __version__
from app.console import STATIC_DIR, TEMPLATES_DIR

STATIC_URL = "/ui/static"

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=TEMPLATES_DIR)
# The pages are tiny and change with the scripts they load: never serve a stale shell.
NO_STORE = {"Cache-Control": "no-store"}


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    context = {"static": STATIC_URL, "version": __version__, "page": template.removesuffix(".html"), **context}
    return templates.TemplateResponse(request, template, context, headers=NO_STORE)


@router.get("/", response_class=HTMLResponse)
@router.get("/ui/tasks", response_class=HTMLResponse)
async def tasks_page(request: Request) -> HTMLResponse:
    return _page(request, "tasks.html")


@router.get("/ui", response_class=RedirectResponse)
@router.get("/ui/", response_class=RedirectResponse)
async def console_home() -> RedirectResponse:
    return RedirectResponse("/", status_code=307)


@router.get("/ui/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(request: Request, task_id: str) -> HTMLResponse:
    return _page(request, "task.html", task_id=task_id)


@router.get("/ui/start", response_class=HTMLResponse)
async def start_page(request: Request) -> HTMLResponse:
    return _page(request, "start.html")


@router.get("/ui/data", response_class=HTMLResponse)
async def data_page(request: Request) -> HTMLResponse:
    return _page(request, "data.html")


@router.get("/ui/files", response_class=HTMLResponse)
async def files_page(request: Request) -> HTMLResponse:
    return _page(request, "files.html")


def install_console(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="console-static")
