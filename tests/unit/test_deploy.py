"""Deployment files, checked without a container engine (none runs on the CI machines).

.env.example        names exactly the Settings fields, each with its default and a meaning
docker-compose.yml  parses; PostgreSQL healthcheck + named volume; app waits, auth on;
                    sets only real settings; the commented scale-out example parses too;
                    the "s3" profile: SeaweedFS + a bucket the app waits for, README says how
Dockerfile          multi-stage slim 3.11, non-root, volume = storage dir, HEALTHCHECK on
                    /healthz, CMD = the command tests/helpers/server.py starts
build context       what .dockerignore lets through builds a wheel that migrates a database
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from fnmatch import fnmatch

import pytest
import yaml

import tests.helpers.server as server_module
from app.config import Settings
from tests.helpers.deploy import dockerfile, exec_form, runtime_stage
from tests.helpers.server import ROOT, LiveServer

SETTING_NAMES = {f"TSM_{name.upper()}" for name in Settings.model_fields}
LINE = re.compile(r"^#(TSM_[A-Z0-9_]+)=(.*)$")  # commented out: copying the file changes nothing


# -- .env.example ------------------------------------------------------------------------------
def test_env_example_names_every_setting_once_with_a_meaning():
    lines = (ROOT / ".env.example").read_text().splitlines()
    names = []
    for index, line in enumerate(lines):
        match = LINE.match(line)
        if match:
            names.append(match.group(1))
            assert lines[index - 1].startswith("# "), f"{match.group(1)} has no comment line saying what it means"
    assert len(names) == len(set(names)), "a setting is listed twice"
    assert set(names) == SETTING_NAMES, (
        f"missing: {sorted(SETTING_NAMES - set(names))}; not settings: {sorted(set(names) - SETTING_NAMES)}"
    )


def test_env_example_values_are_the_defaults(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("TSM_"):
            monkeypatch.delenv(key)
    lines = (ROOT / ".env.example").read_text().splitlines()
    uncommented = tmp_path / "uncommented.env"
    uncommented.write_text("\n".join(line[1:] for line in lines if LINE.match(line)))
    assert not any(line.startswith("TSM_") for line in lines), "an active line would override the image's defaults"
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    from_file = Settings(_env_file=uncommented)  # type: ignore[call-arg]
    assert from_file.model_dump() == defaults.model_dump()
    assert from_file.model_fields_set >= set(Settings.model_fields), "every line was read"


def _readme_section(title: str) -> str:
    """The README's ``## <title>`` section, up to the next ``## `` heading."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_readme_configuration_table_lists_every_setting():
    section = _readme_section("Configuration")
    rows = set(re.findall(r"^\| `(TSM_[A-Z0-9_]+)` \|", section, re.MULTILINE))
    assert rows == SETTING_NAMES, f"missing: {sorted(SETTING_NAMES - rows)}; extra: {sorted(rows - SETTING_NAMES)}"


# -- docker-compose.yml -------------------------------------------------------------------------
def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _tsm_keys(environment: dict | list) -> set[str]:
    keys = environment.keys() if isinstance(environment, dict) else (item.split("=", 1)[0] for item in environment)
    return {key for key in keys if key.startswith("TSM_")}


def test_compose_runs_the_app_on_a_healthy_postgresql():
    compose = _compose()
    db, app = compose["services"]["db"], compose["services"]["app"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    db_volume = db["volumes"][0].split(":")[0]
    assert db_volume in compose["volumes"], "PostgreSQL data must be on a named volume"

    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    env = app["environment"]
    assert str(env["TSM_AUTH_REQUIRED"]).lower() == "true"
    assert env["TSM_HOST"] == "0.0.0.0"
    assert env["TSM_DATABASE_URL"].startswith(f"postgresql+asyncpg://{db['environment']['POSTGRES_USER']}:")
    assert env["TSM_DATABASE_URL"].endswith(f"@db:5432/{db['environment']['POSTGRES_DB']}")
    assert [item["path"] for item in app["env_file"]] == [".env"]
    storage_volume, mount = app["volumes"][0].split(":")[:2]
    assert mount == env["TSM_STORAGE_DIR"] and storage_volume in compose["volumes"]
    assert app["ports"] == [f"{env['TSM_PORT']}:{env['TSM_PORT']}"]


def test_compose_s3_profile_runs_seaweedfs_and_the_app_waits_for_its_bucket():
    compose = _compose()
    services = compose["services"]
    s3, bucket, app = services["s3"], services["s3-bucket"], services["app"]
    assert s3["profiles"] == ["s3"] and bucket["profiles"] == ["s3"]
    assert "profiles" not in app and "profiles" not in services["db"], "the default stack needs no profile"
    assert s3["image"].startswith("chrislusf/seaweedfs:") and s3["command"][:3] == ["server", "-dir=/data", "-s3"]
    port = next(arg for arg in s3["command"] if arg.startswith("-s3.port=")).split("=")[1]
    config = next(arg for arg in s3["command"] if arg.startswith("-s3.config=")).split("=")[1]
    assert s3["configs"] == [{"source": "s3_identities", "target": config}]
    assert s3["volumes"][0].split(":")[0] in compose["volumes"], "the bucket's bytes must be on a named volume"
    # The identity SeaweedFS accepts is the one the app signs with (TSM_S3_* from .env).
    identities = compose["configs"]["s3_identities"]["content"]
    assert "${TSM_S3_ACCESS_KEY_ID:-tsm}" in identities and "${TSM_S3_SECRET_ACCESS_KEY:-" in identities
    assert bucket["environment"]["AWS_ACCESS_KEY_ID"] == "${TSM_S3_ACCESS_KEY_ID:-tsm}"
    assert f"http://s3:{port}" in bucket["command"][0] and "TSM_STORAGE_URL" in bucket["command"][0]
    assert bucket["depends_on"] == ["s3"]
    # Without the profile the app starts as before; with it, once the bucket exists.
    wait = app["depends_on"]["s3-bucket"]
    assert wait == {"condition": "service_completed_successfully", "required": False}
    # The README says how to turn it on, with the settings the app needs.
    section = _readme_section("Deployment")
    assert "docker compose --profile s3 up" in section
    for line in ("COMPOSE_PROFILES=s3", "TSM_STORAGE_URL=s3://", f"TSM_S3_ENDPOINT_URL=http://s3:{port}"):
        assert line in section, line


def test_the_image_can_reach_s3():
    install = next(args for op, args in dockerfile() if op == "RUN" and "pip install" in args)
    assert "'.[s3]'" in install, "TSM_STORAGE_URL=s3://… needs the s3 extra in the image"


def test_compose_sets_only_real_settings():
    for name, service in _compose()["services"].items():
        unknown = _tsm_keys(service.get("environment", {})) - SETTING_NAMES
        assert not unknown, f"service {name} sets unknown settings {unknown}"


def test_compose_scale_out_example_parses():
    text = (ROOT / "docker-compose.yml").read_text()
    block = text.split("# --- scale-out example")[1].split("# --- end of scale-out example")[0]
    lines = [line[2:] for line in block.splitlines()[1:] if line.startswith("# ") or line == "#"]
    start = next(i for i, line in enumerate(lines) if line == "services:")  # skip the prose above
    example = yaml.safe_load("\n".join(lines[start:]))
    assert example["services"]["proxy"]["image"].startswith("nginx")
    assert example["services"]["app"]["environment"]["FORWARDED_ALLOW_IPS"] == "*"
    nginx = example["configs"]["nginx_conf"]["content"]
    for directive in ("proxy_request_buffering off", "proxy_buffering off", "client_max_body_size 0"):
        assert directive in nginx
    assert "server app:8000" in nginx


# -- Dockerfile ---------------------------------------------------------------------------------
def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in stage:
        if op == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def test_dockerfile_is_multi_stage_slim_and_unprivileged():
    instructions = dockerfile()
    args = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for op, a in instructions if op == "ARG")))
    froms = [a.replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", "")) for op, a in instructions if op == "FROM"]
    assert len(froms) >= 2 and all(f.startswith("python:3.11-slim") for f in froms)
    runtime = runtime_stage()
    assert any(op == "COPY" and "--from=build" in a for op, a in runtime), "runtime copies only the built venv"
    users = [a for op, a in runtime if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = _env(runtime)
    assert set(k for k in env if k.startswith("TSM_")) <= SETTING_NAMES
    volumes = [json.loads(a) for op, a in runtime if op == "VOLUME"]
    assert [env["TSM_STORAGE_DIR"]] in volumes
    assert env["TSM_AUTH_REQUIRED"] == "true" and env["TSM_HOST"] == "0.0.0.0"


def test_dockerfile_starts_the_command_the_tests_start(monkeypatch, tmp_path):
    started: dict[str, object] = {}

    class Started(Exception):
        pass

    def record(args, **kwargs):
        started.update(args=args, cwd=kwargs["cwd"])
        raise Started

    monkeypatch.setattr(server_module.subprocess, "Popen", record)
    with pytest.raises(Started):
        LiveServer("sqlite+aiosqlite:///unused", tmp_path / "storage").start()
    args = started["args"]
    assert args[0] == sys.executable
    assert exec_form("CMD") == ["python", *args[1:]] == ["python", "-m", "app", "run"]
    # …which is `tsm-server run`, the command the README documents.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tsm-server"] == "app.cli:main"
    assert "from app.cli import main" in (ROOT / "app" / "__main__.py").read_text()
    assert "tsm-server run" in _readme_section("Deployment")


def _dockerignored(path: str) -> bool:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    return any(fnmatch(path, p) or fnmatch(path, p.removeprefix("**/")) or path.startswith(p + "/") for p in patterns)


def test_dockerignore_keeps_secrets_and_state_out_of_the_build_context():
    for path in (".env", ".venv", "storage", ".git", "tests", "app/__pycache__"):
        assert _dockerignored(path), path
    for op, args in dockerfile():
        if op == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert not _dockerignored(source), f"COPY {source} is excluded by .dockerignore"


def test_build_context_installs_and_migrates(tmp_path):
    """What the build stage does — ``pip install .`` of the COPYed files — then what the runtime
    does first: apply every migration from the installed package (not from this checkout)."""
    context = tmp_path / "context"
    context.mkdir()
    for op, args in dockerfile():
        if op == "COPY" and "--from" not in args:
            *sources, _dest = args.split()
            for source in sources:
                src = ROOT / source
                copy = shutil.copytree if src.is_dir() else shutil.copy
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                copy(src, context / source, **({"ignore": ignore} if src.is_dir() else {}))  # type: ignore[operator]
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(context)]
    subprocess.run(pip, check=True, capture_output=True, timeout=120)
    (wheel,) = wheels.glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    assert any(site.glob("app/migrations/versions/0001_*.py")) and (site / "app/migrations/script.py.mako").exists()

    env = {**os.environ, "PYTHONPATH": str(site), "TSM_STORAGE_DIR": str(tmp_path / "data"), "TSM_DATABASE_URL": ""}
    probe = subprocess.run(
        [sys.executable, "-c", "import app; print(app.__file__)"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert probe.stdout.strip().startswith(str(site)), "the installed package, not this checkout, must run"
    done = subprocess.run(
        [sys.executable, "-m", "app", "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
    assert (tmp_path / "data" / "tsm.sqlite3").stat().st_size > 0
