"""Regression tests for bugs that a schemathesis pass over /openapi.json found."""

from __future__ import annotations

import io
import wave

import pytest
from flask.testing import FlaskClient

IMPORT_URL = "/api/dicom/instances/import"

# The 1 x 1 lossless WebP image that schemathesis sends as a sample binary.
# Read as an implicit VR little endian dataset, "RIFF" is tag (4952,4646) and
# the RIFF chunk size (26) is exactly the rest of the file, so the bytes look
# like one well-formed data element.
TINY_WEBP = bytes.fromhex(
    "524946461a000000574542505650384c0e0000002f00000000071011fd0f4444ff03"
)


def tiny_wav() -> bytes:
    """Return a 10 ms mono 8 kHz WAV file, another RIFF container."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(b"\x00\x00" * 80)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data"),
    [("webp", TINY_WEBP), ("wav", tiny_wav())],
    ids=["webp", "wav"],
)
def test_import_rejects_riff_files(client: FlaskClient, name: str, data: bytes) -> None:
    # The README states that files which are not DICOM are rejected and not stored.
    response = client.post(IMPORT_URL, data=data, content_type="application/dicom")
    body = response.get_json()

    assert response.status_code == 400, f"{name} upload was stored: {body}"
    assert body["success"] is False
    assert "not a DICOM file" in body["errors"]["request body"][0]
    assert client.get("/api/dicom/instances").get_json()["data"]["count"] == 0


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/health", {"GET"}),
        ("TRACE", "/api/orthanc/worklists/stats", {"GET"}),
        ("PUT", "/api/dicom/instances", {"GET", "POST"}),
    ],
)
def test_method_not_allowed_sends_allow(
    client: FlaskClient, method: str, path: str, allowed: set[str]
) -> None:
    # RFC 9110 section 15.5.6: a 405 response must carry an Allow header
    # that lists the methods the resource supports.
    response = client.open(path, method=method)

    assert response.status_code == 405
    assert response.get_json()["success"] is False
    assert "Allow" in response.headers, f"{method} {path}: 405 without Allow header"
    advertised = {item.strip() for item in response.headers["Allow"].split(",")}
    assert allowed <= advertised
