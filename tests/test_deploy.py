"""deploy/: the compose file and the image, read against the settings and the rules of a safe stack.

No Docker engine runs on the CI machine, so the stack is not started here; this checks what can be checked
without one: every LOOKALIKE_ variable is a real setting, every part the app needs is there, only the load
balancer publishes a port, secrets must be given, services wait for the health of what they need, and the
image builds its wheels in a stage that has a compiler.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from lookalike.config import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def environment(service: dict) -> dict:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def test_every_lookalike_variable_is_a_setting() -> None:
    fields = set(Settings.model_fields)
    seen = set()
    for name, service in compose()["services"].items():
        for key in environment(service):
            if key.startswith("LOOKALIKE_"):
                seen.add(key)
                assert key.removeprefix("LOOKALIKE_").lower() in fields, f"{name}: {key} is not a setting"
    assert {"LOOKALIKE_DATABASE_URL", "LOOKALIKE_VECTOR_BACKEND", "LOOKALIKE_IMAGE_STORE", "LOOKALIKE_API_KEY"} <= seen


def test_every_part_the_app_needs_is_there() -> None:
    services = compose()["services"]
    assert {"postgres", "etcd", "milvus-minio", "milvus", "photos", "api", "worker", "lb"} <= set(services)
    assert services["worker"]["command"] == ["lookalike", "worker"]
    assert "serve" in services["api"]["command"] and environment(services["api"])["LOOKALIKE_SERVE_WORKER"] == "0"
    env = environment(services["api"])
    assert (
        "@postgres:5432/" in env["LOOKALIKE_DATABASE_URL"] and env["LOOKALIKE_VECTOR_BACKEND"] == "http://milvus:19530"
    )
    assert env["LOOKALIKE_S3_ENDPOINT_URL"] == "http://photos:9000"
    assert "server api:8000" in (DEPLOY / "nginx.conf").read_text()


def test_only_the_load_balancer_publishes_a_port_and_the_backend_is_internal() -> None:
    doc = compose()
    published = [name for name, service in doc["services"].items() if service.get("ports")]
    assert published == ["lb"]
    assert doc["networks"]["backend"]["internal"] is True
    for name in ("postgres", "etcd", "milvus-minio", "milvus", "photos"):
        assert doc["services"][name]["networks"] == ["backend"], name


def test_secrets_must_be_set_and_services_wait_for_health() -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    for secret in ("LOOKALIKE_API_KEY", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert re.search(r"\$\{" + secret + r":\?", text), f"{secret} has no required-variable guard"
    assert "lookalike-secret" not in text
    for name, service in compose()["services"].items():
        assert "healthcheck" in service, name
        assert service.get("restart") == "unless-stopped", name
        for dep, cond in (service.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"}, f"{name} -> {dep}"
    # the load balancer waits for API replicas that can serve (catalog, engine, store, models), not just alive
    assert "/healthz/ready" in " ".join(compose()["services"]["api"]["healthcheck"]["test"])


def test_the_image_builds_wheels_with_a_compiler_then_runs_without_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"FROM python:3\.11-slim AS build", text) and "build-essential" in text
    assert "pip wheel" in text and "--no-index --find-links /wheels" in text
    assert "USER lookalike" in text and "HEALTHCHECK" in text


def test_the_load_balancer_lets_through_what_the_api_accepts() -> None:
    """nginx refuses larger bodies itself (413) before the API sees them: its limits must not be below the API's, or
    a video upload the API would take fails behind the stack (and the photo limit stays tight elsewhere)."""
    text = (DEPLOY / "nginx.conf").read_text()
    general = re.search(r"^\s*client_max_body_size (\d+)m;", text, re.M)
    uploads = re.search(r"location = /api/v1/images \{[^}]*client_max_body_size (\d+)m;", text)
    assert general is not None and uploads is not None
    settings = Settings()
    assert settings.max_upload_bytes <= int(general.group(1)) * 2**20 < settings.video_upload_max_bytes
    assert settings.video_upload_max_bytes <= int(uploads.group(1)) * 2**20
