"""The API spec says what the server sends: every error a problem, 401 wherever a key is checked."""

from __future__ import annotations

import pytest

from app.errors import PROBLEM_JSON
from tests.helpers.apps import open_app

PUBLIC = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"), ("get", "/tasks/kinds"), ("options", "/files")}
TUS_OPERATIONS = {("post", "/files"), ("patch", "/files/{file_id}"), ("delete", "/files/{file_id}")}


@pytest.fixture
async def spec(settings):
    async with open_app(settings) as (_app, client):
        yield (await client.get("/openapi.json")).json()


def _operations(spec):
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield method, path, operation


async def test_every_error_response_is_a_problem_document(spec):
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert {"type", "title", "status", "detail"} <= set(spec["components"]["schemas"]["Problem"]["properties"])
    for method, path, operation in _operations(spec):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = response["content"][PROBLEM_JSON]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, status)
                assert list(response["content"]) == [PROBLEM_JSON], (method, path, status)


async def test_401_is_declared_exactly_where_a_key_is_checked(spec):
    for method, path, operation in _operations(spec):
        authenticated = bool(operation.get("security"))
        assert authenticated == ((method, path) not in PUBLIC), (method, path)
        assert ("401" in operation["responses"]) == authenticated, (method, path)


async def test_limits_and_tus_statuses_are_declared_where_they_apply(spec):
    paths = spec["paths"]
    assert {"413", "415", "422", "429"} <= set(paths["/tasks"]["post"]["responses"])
    assert paths["/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/TaskCreate"
    )
    for method, path in TUS_OPERATIONS:
        responses = paths[path][method]["responses"]
        assert "412" in responses and "422" not in responses, (method, path)  # tus answers 400, not 422
    assert {"413", "423", "460", "507"} <= set(paths["/files/{file_id}"]["patch"]["responses"])
    assert {"413", "429"} <= set(paths["/files"]["post"]["responses"])
    assert "416" in paths["/files/{file_id}"]["get"]["responses"]


async def test_every_authenticated_route_answers_401_problems_without_a_key(settings):
    async with open_app(settings, auth_required=True) as (_app, client):
        spec = (await client.get("/openapi.json")).json()
        uuid = "00000000-0000-4000-8000-000000000000"
        for method, path, operation in _operations(spec):
            if not operation.get("security"):
                continue
            response = await client.request(method.upper(), path.replace("{task_id}", uuid).replace("{file_id}", uuid))
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            if method != "head":
                assert response.headers["content-type"] == PROBLEM_JSON


@pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
async def test_probes_answer_exactly_what_their_schemas_declare(settings, store):
    async with open_app(settings) as (_app, client):
        schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
        for path, name in (("/healthz", "HealthRead"), ("/readyz", "ReadyRead")):
            body = (await client.get(path)).json()
            declared = schemas[name]
            assert set(body) == set(declared["properties"]), path
            assert set(declared["required"]) <= set(body), path
            assert all(value is not None for value in body.values()), path
        assert (await client.get("/readyz")).json()["store"] == store


async def test_readiness_is_a_503_problem_while_the_database_is_unreachable(settings):
    from app.db import Database

    async with open_app(settings) as (app, client):
        reachable = app.state.database
        app.state.database = Database("postgresql+asyncpg://postgres@127.0.0.1:9/unreachable")
        try:
            answer = await client.get("/readyz")
            assert answer.status_code == 503
            assert answer.headers["content-type"] == PROBLEM_JSON
            assert answer.json()["detail"] == "The database is not reachable."
            assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
        finally:
            await app.state.database.dispose()
            app.state.database = reachable


@pytest.mark.parametrize("store", ["s3"], indirect=True)
async def test_readiness_is_a_503_problem_naming_the_bucket_while_it_is_unreachable(settings):
    async with open_app(settings) as (app, client):
        store = app.state.store
        bucket = store.bucket
        store.bucket = "tsm-no-such-bucket"
        try:
            answer = await client.get("/readyz")
            assert answer.status_code == 503
            assert answer.headers["content-type"] == PROBLEM_JSON
            assert answer.json()["detail"] == "The s3 store (S3 bucket tsm-no-such-bucket) is not reachable."
        finally:
            store.bucket = bucket
        assert (await client.get("/readyz")).status_code == 200
