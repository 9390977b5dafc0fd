"""Security tests: bearer token, request limits, field rules and file confinement."""

from __future__ import annotations

import logging
import os
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR
from pydicom.uid import generate_uid

from app import create_app
from app.local_orthanc import LocalOrthanc

from .support import CONTRACT_EXAMPLE, app_config

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# Request fields of POST /api/dicom/instances that are DICOM text, and the
# element keyword that each one fills.
TEXT_FIELDS = {
    "patientID": "PatientID",
    "patientName": "PatientName",
    "patientSex": "PatientSex",
    "studyDescription": "StudyDescription",
    "seriesDescription": "SeriesDescription",
    "modality": "Modality",
    "accessionNumber": "AccessionNumber",
    "institutionName": "InstitutionName",
    "referringPhysicianName": "ReferringPhysicianName",
    "performingPhysicianName": "PerformingPhysicianName",
    "studyID": "StudyID",
    "stationName": "StationName",
    "bodyPartExamined": "BodyPartExamined",
}

BASELINE_BODY = {
    **CONTRACT_EXAMPLE,
    "studyID": "STUDY1",
    "stationName": "STATION1",
    "bodyPartExamined": "CHEST",
}

# Elements whose value differs between two creates from the same body.
VARYING_KEYWORDS = {
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "FrameOfReferenceUID", "MediaStorageSOPInstanceUID",
    "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "ContentDate",
    "ContentTime", "InstanceCreationDate", "InstanceCreationTime",
    "SpecificCharacterSet",
}  # fmt: skip


def read_elements(path: Path) -> dict[str, str]:
    """Return every element of a file, keyed by keyword (or tag if private)."""
    dataset = pydicom.dcmread(path)
    elements: dict[str, str] = {}
    for element in dataset.iterall():
        key = element.keyword or str(element.tag)
        elements[key] = "" if element.value is None else str(element.value)
    return elements


def create(client: FlaskClient, body: Any, **kwargs: Any) -> Any:
    return client.post("/api/dicom/instances", json=body, **kwargs)


def created_path(response: Any) -> Path:
    return Path(response.get_json()["data"]["filepath"])


# --- Authentication -------------------------------------------------------


@pytest.fixture
def secured_app(tmp_path: Path, orthanc: LocalOrthanc) -> Flask:
    application = create_app(app_config(tmp_path, orthanc, API_TOKEN=TOKEN))
    application.testing = True
    return application


def route_requests(app: Flask, filename: str) -> Iterator[tuple[str, str, str]]:
    """Yield ``(endpoint, method, url)`` for every route and method of the app."""
    adapter = app.url_map.bind("localhost")
    rules = sorted(
        app.url_map.iter_rules(),
        key=lambda rule: ("DELETE" in (rule.methods or ()), rule.rule),
    )
    for rule in rules:
        values = {name: filename for name in rule.arguments}
        if rule.rule.startswith("/api/orthanc"):
            values = {name: "missing-entry.wl" for name in rule.arguments}
        for method in sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"}):
            url = adapter.build(rule.endpoint, values, method=method)
            yield rule.endpoint, method, url


# Bodies that make each known route succeed. Other routes get no body.
VALID_BODIES: dict[str, Any] = {
    "instances.create_instance": CONTRACT_EXAMPLE,
    "instances.create_batch": [CONTRACT_EXAMPLE],
    "instances.create_sample": {},
}

# Status of each known route with the right token.
SUCCESS_STATUS = {
    "service.index": 200,
    "service.openapi": 200,
    "instances.create_instance": 201,
    "instances.create_batch": 201,
    "instances.list_instances": 200,
    "instances.instance_stats": 200,
    "instances.validate_instance": 200,
    "instances.dump_instance": 200,
    "instances.send_instance": 200,
    "instances.send_batch": 200,
    "instances.download_instance": 200,
    "instances.delete_instance": 200,
    "instances.create_sample": 201,
    "instances.list_modalities": 200,
    "instances.tools_status": 200,
    # The app has no static folder, so Flask's static route finds nothing.
    "static": 404,
}

WRONG_HEADERS = [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer "},
    {"X-Api-Token": TOKEN},
]


def test_every_route_requires_token(secured_app: Flask) -> None:
    client = secured_app.test_client()
    filename = created_path(create(client, CONTRACT_EXAMPLE, headers=AUTH)).name
    stored = Path(secured_app.config["DICOM_STORAGE_DIR"]) / filename
    checked = 0

    for endpoint, method, url in route_requests(secured_app, filename):
        if endpoint == "service.health":
            continue
        for headers in WRONG_HEADERS:
            response = client.open(
                url, method=method, headers=headers, json=VALID_BODIES.get(endpoint)
            )
            body = response.get_json()
            assert response.status_code == 401, (method, url, headers)
            assert body["success"] is False, (method, url)
            assert body["data"] is None, (method, url)
            assert "Bearer" in body["message"], (method, url)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            checked += 1

    assert checked > 0
    # Nothing was written, sent or deleted by a request without the token.
    assert stored.is_file()
    assert len(list(stored.parent.glob("instance_*.dcm"))) == 1


def test_every_route_works_with_token(secured_app: Flask) -> None:
    client = secured_app.test_client()
    filename = created_path(create(client, CONTRACT_EXAMPLE, headers=AUTH)).name

    for endpoint, method, url in route_requests(secured_app, filename):
        body = VALID_BODIES.get(endpoint)
        if endpoint == "instances.send_batch":
            body = {"filenames": [filename]}
        with client.open(url, method=method, headers=AUTH, json=body) as response:
            content = response.get_data()[:300]

        assert response.status_code != 401, (method, url)
        assert response.status_code < 500 or endpoint == "service.health", (method, url)
        if endpoint in SUCCESS_STATUS:
            assert response.status_code == SUCCESS_STATUS[endpoint], (method, url, content)


def test_token_scheme_is_case_insensitive(secured_app: Flask) -> None:
    client = secured_app.test_client()

    response = client.get(
        "/api/dicom/instances", headers={"Authorization": f"bearer {TOKEN}"}
    )

    assert response.status_code == 200


def test_health_is_open_without_token(secured_app: Flask) -> None:
    response = secured_app.test_client().get("/health")

    assert response.status_code == 200
    assert response.get_json()["data"]["status"] == "healthy"


def test_unknown_route_needs_token(secured_app: Flask) -> None:
    response = secured_app.test_client().get("/api/dicom/no-such-route")

    assert response.status_code == 401


# --- Body size and JSON shape ---------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/api/dicom/instances",
        "/api/dicom/instances/batch",
        "/api/dicom/instances/sample",
    ],
)
def test_body_over_limit_is_413(
    tmp_path: Path, orthanc: LocalOrthanc, url: str
) -> None:
    app = create_app(app_config(tmp_path, orthanc, MAX_CONTENT_LENGTH=1024))
    padding = "x" * 2048
    payload = f'{{"patientID": "P1", "studyDescription": "{padding}"}}'

    response = app.test_client().post(
        url, data=payload, content_type="application/json"
    )
    body = response.get_json()

    assert response.status_code == 413
    assert body["success"] is False
    assert body["data"] is None
    assert "MAX_CONTENT_LENGTH" in body["message"]
    assert list((tmp_path / "instances").iterdir()) == []


def test_body_at_limit_is_accepted(tmp_path: Path, orthanc: LocalOrthanc) -> None:
    app = create_app(app_config(tmp_path, orthanc, MAX_CONTENT_LENGTH=1024))
    payload = '{"patientID": "P1"}'
    payload = payload[:-1] + " " * (1024 - len(payload)) + "}"

    response = app.test_client().post(
        "/api/dicom/instances", data=payload, content_type="application/json"
    )

    assert len(payload) == 1024
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"", "Missing JSON body"),
        (b"{", "Not valid JSON"),
        (b"{'patientID': 'P1'}", "Not valid JSON"),
        (b'{"patientID": "P1",}', "Not valid JSON"),
        (b"\xff\xfe{}", "Not valid JSON"),
        (b"[" * 100_000, "Not valid JSON"),
        (b"[]", "not an array"),
        (b'[{"patientID": "P1"}]', "not an array"),
        (b"5", "not a number"),
        (b'"P1"', "not a string"),
        (b"true", "not a boolean"),
        (b"null", "not null"),
    ],
)
def test_body_shape_is_400(client: FlaskClient, payload: bytes, fragment: str) -> None:
    response = client.post(
        "/api/dicom/instances", data=payload, content_type="application/json"
    )
    body = response.get_json()

    assert response.status_code == 400
    assert body["success"] is False
    assert body["data"] is None
    assert any(fragment in message for message in body["errors"]["body"])


# --- Field rules -----------------------------------------------------------

BAD_FIELDS = [
    ("patientID", 123, "Not a valid string"),
    ("patientID", None, "Must not be null"),
    ("patientID", ["P1"], "Not a valid string"),
    ("patientID", {"value": "P1"}, "Not a valid string"),
    ("patientID", True, "Not a valid string"),
    ("patientID", "", "Must not be empty"),
    ("patientID", "   ", "Must not be empty"),
    ("patientID", "P" * 65, "Longer than 64 characters (LO)"),
    ("patientID", "P1\nP2", "control characters"),
    ("patientID", "P1\x00", "control characters"),
    ("patientID", "P1\x85", "control characters"),
    ("patientID", "P1\\P2", "backslash"),
    ("patientID", "P\ud800", "surrogate"),
    ("accessionNumber", "A" * 17, "Longer than 16 characters (SH)"),
    ("studyDescription", "Chest\r\n(0010,0020) LO [EVIL]", "control characters"),
    ("studyDescription", "a]\n(0010,0010) PN [Evil^Name", "control characters"),
    ("studyDescription", "D" * 65, "Longer than 64 characters (LO)"),
    ("seriesDescription", "x\ty", "control characters"),
    ("institutionName", "a\\b", "backslash"),
    ("stationName", "S" * 17, "Longer than 16 characters (SH)"),
    ("studyID", "I" * 17, "Longer than 16 characters (SH)"),
    ("patientName", "Doe^Jane^M^Dr^Jr^Extra", "'^' may appear at most 4 times"),
    ("patientName", "Doe=Jane=X=Y", "'=' may appear at most twice"),
    ("patientName", "D" * 65, "Longer than 64 characters in one component group"),
    ("patientName", "Doe\\Jane", "backslash"),
    ("patientName", "Doe^Jane\x1b", "control characters"),
    ("referringPhysicianName", "a^b^c^d^e^f", "'^' may appear at most 4 times"),
    ("performingPhysicianName", "a=b=c=d", "'=' may appear at most twice"),
    ("patientSex", "X", "Must be M, F or O"),
    ("patientSex", "m", "Only A-Z, 0-9, space and underscore"),
    ("modality", "XX", "Unsupported modality"),
    ("modality", "cr", "(CS)"),
    ("bodyPartExamined", "chest", "Only A-Z, 0-9, space and underscore"),
    ("bodyPartExamined", "CHEST^", "Only A-Z, 0-9, space and underscore"),
    ("patientBirthDate", "2023-02-30", "Not a real date"),
    ("patientBirthDate", "20231301", "Not a real date"),
    ("patientBirthDate", "17/05/1980", "Not a real date"),
    ("patientBirthDate", "1980-5-17", "Not a real date"),
    ("patientBirthDate", 19800517, "Not a valid string"),
    ("patientBirthDate", None, "Must not be null"),
    ("studyDate", "2024-00-10", "Not a real date"),
    ("studyTime", "25:00", "Not a valid time"),
    ("studyTime", "12:60:00", "Not a valid time"),
    ("studyInstanceUID", "1.2.abc", "Only digits and '.'"),
    ("studyInstanceUID", "1.02.3", "must not start with 0"),
    ("studyInstanceUID", "1..2", "Components must not be empty"),
    ("studyInstanceUID", "1.2.", "Components must not be empty"),
    ("studyInstanceUID", "1." + "2" * 70, "Longer than 64 characters"),
    ("seriesInstanceUID", "1.2\\1.3", "Only digits and '.'"),
    ("seriesInstanceUID", "", "Must not be empty"),
    ("seriesNumber", "abc", "whole number"),
    ("seriesNumber", 1.5, "whole number"),
    ("seriesNumber", True, "whole number"),
    ("instanceNumber", -1, "Must be between 0"),
    ("instanceNumber", 2**31, "Must be between 0"),
    ("unknownField", "x", "Unknown field"),
]


@pytest.mark.parametrize(("field", "value", "fragment"), BAD_FIELDS)
def test_bad_field_is_400(
    client: FlaskClient, tmp_path: Path, field: str, value: Any, fragment: str
) -> None:
    response = create(client, {**CONTRACT_EXAMPLE, field: value})
    body = response.get_json()

    assert response.status_code == 400
    assert body["success"] is False
    assert body["message"] == "Invalid request body"
    assert list(body["errors"]) == [field]
    assert any(fragment in message for message in body["errors"][field]), body
    assert list((tmp_path / "instances").glob("instance_*")) == []


def test_missing_patient_id_is_400(client: FlaskClient) -> None:
    body = {key: value for key, value in CONTRACT_EXAMPLE.items() if key != "patientID"}

    response = create(client, body)

    assert response.status_code == 400
    assert "patientID" in response.get_json()["errors"]


# Values that are allowed, but that would break a naive dump file.
TRICKY_VALUES = [
    ("studyDescription", "a] (0010,0020) LO [EVIL"),
    ("studyDescription", "[bracketed]"),
    ("studyDescription", "]"),
    ("studyDescription", "# not a comment"),
    ("institutionName", "St. Mary's (North) = Wing ^ A"),
    ("accessionNumber", "A=B^C[D]"),
    ("patientName", "O'Brien^Seán"),
    ("patientName", "山田^太郎=やまだ^たろう"),
    ("patientName", "=Yamada^Taro"),
    ("referringPhysicianName", "Müller^Jürgen^^Dr."),
    ("seriesDescription", "  padded  "),
]


@pytest.mark.parametrize(("field", "value"), TRICKY_VALUES)
def test_tricky_value_round_trips(client: FlaskClient, field: str, value: str) -> None:
    baseline = read_elements(created_path(create(client, BASELINE_BODY)))

    response = create(client, {**BASELINE_BODY, field: value})
    elements = read_elements(created_path(response))

    assert response.status_code == 201
    assert elements[TEXT_FIELDS[field]] == value.strip(" ")
    assert set(elements) - {"SpecificCharacterSet"} == set(baseline) - {
        "SpecificCharacterSet"
    }


# --- Property test: random text in every text field -------------------------

# Characters that mean something to the dump format, to DICOM or to JSON.
SPECIAL_CHARACTERS = "[]()\\^=#,\"' \t\r\n\x00\x1b\x7f\x85\xa0éßΩ山田\u2028\U0001f600"

PRINTABLE_SPECIALS = "".join(
    character
    for character in SPECIAL_CHARACTERS
    if character.isprintable() and character != "\\"
)

# Most examples avoid control characters, so that many requests pass
# validation and their files are read back, and the rest may contain anything.
random_text = st.one_of(
    st.text(alphabet=PRINTABLE_SPECIALS + string.ascii_letters, max_size=70),
    st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), max_size=70),
    st.text(alphabet=SPECIAL_CHARACTERS + string.ascii_letters, max_size=70),
    st.text(max_size=70),
)


@pytest.fixture(scope="module")
def property_client(
    tmp_path_factory: pytest.TempPathFactory, orthanc: LocalOrthanc
) -> FlaskClient:
    app = create_app(app_config(tmp_path_factory.mktemp("property"), orthanc))
    app.testing = True
    return app.test_client()


# Fields whose value selects which elements a file contains (Laterality
# depends on the body part, for example), so the shadow request keeps them.
STRUCTURAL_FIELDS = {"patientSex", "modality", "bodyPartExamined"}


def shadow_body(body: dict[str, Any]) -> dict[str, Any]:
    """Replace each free-text value by a plain one, keeping which ones are empty."""
    shadow = dict(body)
    for field in TEXT_FIELDS:
        if field in STRUCTURAL_FIELDS or not body[field].strip(" "):
            continue
        shadow[field] = "Plain^Value" if field.endswith("Name") else "PLAIN1"
    return shadow


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    replacements=st.dictionaries(
        st.sampled_from(sorted(TEXT_FIELDS)), random_text, min_size=1, max_size=4
    )
)
def test_random_text_round_trips_or_400(
    property_client: FlaskClient, replacements: dict[str, str]
) -> None:
    body = {**BASELINE_BODY, **replacements}

    response = create(property_client, body)
    result = response.get_json()

    assert response.status_code in (201, 400), result
    event(f"status {response.status_code}")
    if response.status_code == 400:
        assert result["success"] is False
        assert set(result["errors"]) <= set(replacements), result
        return

    elements = read_elements(created_path(response))
    for field, keyword in TEXT_FIELDS.items():
        expected = body[field].strip(" ")
        if dictionary_VR(keyword) == "PN":
            # Trailing empty person name component groups are dropped.
            expected = expected.rstrip("=")
        if expected:
            assert elements[keyword] == expected, (field, body[field])
        else:
            assert elements.get(keyword, "") == "", (field, body[field])

    # The same request with plain text must give the same elements, and the
    # same values outside the posted fields.
    shadow = create(property_client, shadow_body(body))
    assert shadow.status_code == 201, shadow.get_json()
    intended = read_elements(created_path(shadow))
    charset = {"SpecificCharacterSet"}
    assert set(elements) - charset == set(intended) - charset
    posted_keywords = set(TEXT_FIELDS.values())
    for keyword, value in intended.items():
        if keyword in posted_keywords or keyword in VARYING_KEYWORDS:
            continue
        assert elements.get(keyword) == value, keyword


# --- Filenames in paths ------------------------------------------------------

BAD_FILENAMES = [
    "..",
    "%2e%2e",
    "..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "..%5C..%5Cetc%5Cpasswd",
    "instance_1.dcm%5C..",
    "%5Cinstance_1.dcm",
    "instance_1.dcm%00",
    "instance_1.dcm%00.txt",
    "%00",
    "%252e%252e%252Fetc",
    "instance_..%2Finstance_1.dcm",
    "instance_1.dcm%2F..",
    "instance_%E2%80%AE1.dcm",
    "instance_%D9%A1.dcm",
]

FILE_ROUTES = [
    ("GET", "/api/dicom/instances/{}/validate"),
    ("GET", "/api/dicom/instances/{}/dump"),
    ("POST", "/api/dicom/instances/{}/send"),
    ("GET", "/api/dicom/instances/{}/download"),
    ("DELETE", "/api/dicom/instances/{}"),
]


@pytest.fixture
def outside_file(tmp_path: Path, client: FlaskClient) -> Path:
    """A valid instance outside the storage folder, with a unique SOP Instance UID."""
    source = created_path(create(client, CONTRACT_EXAMPLE))
    dataset = pydicom.dcmread(source)
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    source.unlink()

    outside = tmp_path / "outside" / "instance_1.dcm"
    outside.parent.mkdir()
    dataset.save_as(outside)
    return outside


def assert_not_served(response: Any, outside: Path) -> None:
    assert response.status_code in (400, 404), response.get_data()
    assert response.get_json()["success"] is False
    assert outside.read_bytes()[128:] not in response.get_data()
    assert outside.is_file()


@pytest.mark.parametrize("filename", BAD_FILENAMES)
@pytest.mark.parametrize(("method", "route"), FILE_ROUTES)
def test_bad_filename_is_rejected(
    client: FlaskClient, outside_file: Path, filename: str, method: str, route: str
) -> None:
    response = client.open(route.format(filename), method=method)

    assert_not_served(response, outside_file)


def test_absolute_path_is_rejected(client: FlaskClient, outside_file: Path) -> None:
    for method, route in FILE_ROUTES:
        response = client.open(route.format(str(outside_file)), method=method)

        assert_not_served(response, outside_file)


def orthanc_has(orthanc: LocalOrthanc, sop_instance_uid: str) -> bool:
    session = requests.Session()
    session.trust_env = False
    response = session.post(
        f"{orthanc.settings.url}/tools/lookup", data=sop_instance_uid, timeout=10
    )
    response.raise_for_status()
    return bool(response.json())


def test_symlink_to_outside_is_rejected(
    app: Flask, client: FlaskClient, outside_file: Path, orthanc: LocalOrthanc
) -> None:
    link = Path(app.config["DICOM_STORAGE_DIR"]) / "instance_999.dcm"
    link.symlink_to(outside_file)
    uid = pydicom.dcmread(outside_file).SOPInstanceUID

    for method, route in FILE_ROUTES:
        response = client.open(route.format(link.name), method=method)

        assert response.status_code == 404, (method, route)
        assert_not_served(response, outside_file)

    assert not orthanc_has(orthanc, uid)
    listing = client.get("/api/dicom/instances").get_json()["data"]
    assert link.name not in [item["filename"] for item in listing["files"]]


def test_symlink_inside_folder_is_rejected(app: Flask, client: FlaskClient) -> None:
    target = created_path(create(client, CONTRACT_EXAMPLE))
    link = target.parent / "instance_998.dcm"
    link.symlink_to(target.name)
    content = target.read_bytes()

    for method, route in FILE_ROUTES:
        response = client.open(route.format(link.name), method=method)

        assert response.status_code == 404, (method, route)

    assert target.read_bytes() == content
    assert link.is_symlink()


def test_symlinked_directory_is_not_followed(
    app: Flask, client: FlaskClient, outside_file: Path
) -> None:
    link = Path(app.config["DICOM_STORAGE_DIR"]) / "instance_997.dcm"
    os.symlink(outside_file.parent, link)

    response = client.delete(f"/api/dicom/instances/{link.name}")

    assert response.status_code == 404
    assert outside_file.is_file()


# --- Logging -----------------------------------------------------------------

SECRET_NAME = "Zyxwvutsrq^Ponmlkji"
SECRET_ID = "PIDSECRET4711"


def test_patient_data_not_logged(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO)
    body = {**CONTRACT_EXAMPLE, "patientName": SECRET_NAME, "patientID": SECRET_ID}

    created = create(client, body)
    filename = created_path(created).name
    sent = client.post(f"/api/dicom/instances/{filename}/send")
    validated = client.get(f"/api/dicom/instances/{filename}/validate")
    dumped = client.get(f"/api/dicom/instances/{filename}/dump")
    rejected = create(client, {**body, "patientBirthDate": "2023-02-30"})
    failed_send = client.post(f"/api/dicom/instances/{filename}/send", json={"port": 1})

    assert created.status_code == 201
    assert sent.status_code == 200
    assert validated.status_code == 200
    assert SECRET_ID in dumped.get_json()["data"]["dump"]
    assert rejected.status_code == 400
    assert failed_send.status_code == 502
    records = [record for record in caplog.records if record.levelno >= logging.INFO]
    assert len(records) >= 6
    for record in records:
        text = record.getMessage()
        assert SECRET_ID not in text, record.name
        assert "Zyxwvutsrq" not in text, record.name
        assert "Ponmlkji" not in text, record.name


def test_caught_error_logged_with_ids(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    filename = created_path(create(client, CONTRACT_EXAMPLE)).name

    response = client.post(
        f"/api/dicom/instances/{filename}/send",
        json={"port": 1},
        headers={"X-Request-ID": "req-4711"},
    )

    assert response.status_code == 502
    assert response.headers["X-Request-ID"] == "req-4711"
    errors = [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.ERROR
    ]
    assert any("request_id=req-4711" in text and filename in text for text in errors)


def test_request_log_line(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.requests")

    response = client.get("/api/dicom/instances", headers={"X-Request-ID": "abc-1"})

    lines = [r.getMessage() for r in caplog.records if r.name == "app.requests"]
    assert response.headers["X-Request-ID"] == "abc-1"
    assert len(lines) == 1
    assert lines[0].startswith("GET /api/dicom/instances 200 ")
    assert "ms request_id=abc-1" in lines[0]


def test_forged_request_id_is_replaced(client: FlaskClient) -> None:
    response = client.get(
        "/api/dicom/instances", headers={"X-Request-ID": "bad id; INFO fake line"}
    )

    assert response.headers["X-Request-ID"] != "bad id; INFO fake line"
    assert len(response.headers["X-Request-ID"]) == 32
