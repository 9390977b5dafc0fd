"""Tests of the service routes: index, health and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient

from app import create_app
from app.local_orthanc import LocalOrthanc

from .support import app_config


def test_index_lists_route_groups(client: FlaskClient) -> None:
    response = client.get("/")
    body = response.get_json()

    assert response.status_code == 200
    assert body["success"] is True
    assert body["data"]["name"] == "dicom-service"
    assert body["data"]["routes"]["instances"] == "/api/dicom"
    assert body["data"]["routes"]["worklists"] == "/api/orthanc"


def test_health_with_orthanc_running(client: FlaskClient) -> None:
    response = client.get("/health")
    data = response.get_json()["data"]

    assert response.status_code == 200
    assert data["status"] == "healthy"
    assert data["dcmtk"]["ok"] is True
    assert data["storage"]["ok"] is True
    assert data["pacs"]["ok"] is True
    assert data["pacs"]["orthancVersion"]


def test_health_with_orthanc_stopped(tmp_path: Path, orthanc_factory) -> None:
    server: LocalOrthanc = orthanc_factory()
    app = create_app(app_config(tmp_path, server, DCMTK_TIMEOUT=3))
    server.stop()

    response = app.test_client().get("/health")
    body = response.get_json()

    assert response.status_code == 503
    assert body["success"] is False
    assert body["data"]["status"] == "unhealthy"
    assert body["data"]["pacs"]["ok"] is False
    assert "C-ECHO" in body["data"]["reason"]
    assert body["data"]["dcmtk"]["ok"] is True


def test_health_without_dcmtk_on_path(client: FlaskClient, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")

    response = client.get("/health")
    data = response.get_json()["data"]

    assert response.status_code == 503
    assert data["dcmtk"]["ok"] is False
    assert "dump2dcm" in data["dcmtk"]["message"]


def test_unknown_route_is_json_404(client: FlaskClient) -> None:
    response = client.get("/no/such/route")
    body = response.get_json()

    assert response.status_code == 404
    assert body["success"] is False
    assert body["data"] is None


def test_openapi_documents_every_route(app, client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()

    rules = {
        rule.rule.replace("<", "{").replace(">", "}")
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
    }
    assert spec["openapi"].startswith("3.")
    assert rules == set(spec["paths"])
    create = spec["paths"]["/api/dicom/instances"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/Instance")
    assert "patientID" in spec["components"]["schemas"]["Instance"]["properties"]


def test_openapi_documents_file_uploads(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()

    body = spec["paths"]["/api/dicom/instances/import"]["post"]["requestBody"]

    assert set(body["content"]) == {"application/dicom", "multipart/form-data"}
