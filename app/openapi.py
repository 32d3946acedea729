"""The API spec as the server really answers.

FastAPI's generated spec, plus: the ``Problem`` schema every ``problems()`` response points at,
``TaskCreate`` (POST /tasks reads its body itself), and no ``HTTPValidationError`` — FastAPI
adds that 422 to every route with parameters, but validation errors are problems here, and a
route that can answer 422 declares it with ``problems(422)`` like any other status.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app.http.problems import problem_schemas
from app.schemas import TaskCreate

REF_TEMPLATE = "#/components/schemas/{model}"
FASTAPI_VALIDATION_REF = "#/components/schemas/HTTPValidationError"
EXTRA_MODELS: tuple[type[BaseModel], ...] = (TaskCreate,)


def _drop_fastapi_422(spec: dict[str, Any]) -> None:
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {})
            if content.get("application/json", {}).get("schema", {}).get("$ref") == FASTAPI_VALIDATION_REF:
                del responses["422"]
    schemas = spec.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _drop_fastapi_422(spec)
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(problem_schemas())
            for model in EXTRA_MODELS:
                schemas[model.__name__] = model.model_json_schema(ref_template=REF_TEMPLATE)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
