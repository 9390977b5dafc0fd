"""End-to-end check for operators: create, validate, dump and send one instance.

Run ``python -m app.workflow`` (or ``dicom-workflow``) with the same
environment as the service. It creates an instance for PatientID 123456,
validates it, prints its ``dcmdump`` structure and, when Orthanc is
configured, sends it. The exit status is 0 only if every step succeeded.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flask.testing import FlaskClient

from . import create_app

WORKFLOW_BODY = {
    "patientID": "123456",
    "patientName": "Workflow^Test",
    "modality": "CR",
    "studyDescription": "Workflow test",
    "accessionNumber": "WF123456",
}


def main(argv: list[str] | None = None) -> int:
    """Run the workflow and return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-send", action="store_true", help="stop after validating and dumping"
    )
    arguments = parser.parse_args(argv)

    app = create_app()
    client = app.test_client()
    headers = _headers(app.config["API_TOKEN"])

    created = _step(client, "Create", "post", "/api/dicom/instances", headers, WORKFLOW_BODY)
    if created is None:
        return 1
    filename = created["filename"]
    print(f"  file: {created['filepath']}")
    for name, uid in created["uids"].items():
        print(f"  {name}: {uid}")

    validated = _step(client, "Validate", "get", f"/api/dicom/instances/{filename}/validate", headers)
    if validated is None:
        return 1
    print(f"  isValid: {validated['isValid']}")
    for problem in validated["problems"]:
        print(f"  problem: {problem}")

    dumped = _step(client, "Dump", "get", f"/api/dicom/instances/{filename}/dump", headers)
    if dumped is None:
        return 1
    print(dumped["dump"])

    if arguments.no_send or not app.config["ORTHANC_HOST"]:
        print("Send: skipped")
        return 0 if validated["isValid"] else 1

    sent = _step(client, "Send", "post", f"/api/dicom/instances/{filename}/send", headers)
    if sent is None:
        return 1
    print(f"  C-STORE status: {sent['status']}")
    if sent.get("orthancId"):
        print(f"  Orthanc ID: {sent['orthancId']}")
    return 0 if validated["isValid"] else 1


def _step(
    client: FlaskClient,
    name: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    response = getattr(client, method)(path, json=body, headers=headers)
    envelope = response.get_json()
    if not envelope or not envelope.get("success"):
        print(f"{name}: FAILED ({response.status_code})", file=sys.stderr)
        print(json.dumps(envelope, indent=2), file=sys.stderr)
        return None

    print(f"{name}: {envelope['message']}")
    data: dict[str, Any] = envelope["data"]
    return data


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


if __name__ == "__main__":
    sys.exit(main())
