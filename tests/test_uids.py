"""UID generation and checking against the rules of PS3.5 section 9.1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from app import create_app
from app.local_orthanc import LocalOrthanc
from app.uids import MAX_ROOT_LENGTH, check_root, generate_uid, uid_problems

from .support import app_config

# PS3.5 section 9.1: components of digits separated by '.', no empty
# component, no leading zero unless the component is 0, at most 64 characters.
UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
MAX_UID_LENGTH = 64


def follows_uid_rules(value: str) -> bool:
    return len(value) <= MAX_UID_LENGTH and UID_PATTERN.match(value) is not None


def assert_valid_uid(value: str) -> None:
    assert len(value) <= MAX_UID_LENGTH, value
    assert set(value) <= set("0123456789."), value
    components = value.split(".")
    assert all(components), value
    assert all(c == "0" or not c.startswith("0") for c in components), value


components = st.integers(min_value=0, max_value=10**12).map(str)
roots = (
    st.lists(components, min_size=1, max_size=12)
    .map(".".join)
    .filter(lambda root: len(root) <= MAX_ROOT_LENGTH)
)


@settings(max_examples=200, deadline=None)
@given(root=roots)
def test_generated_uids_follow_rules_with_root(root: str) -> None:
    uids = [generate_uid(root) for _ in range(50)]

    for uid in uids:
        assert_valid_uid(uid)
        assert uid.startswith(root + ".")
        assert uid_problems(uid) == []
    assert len(set(uids)) == len(uids)


def test_generated_uids_follow_rules_without_root() -> None:
    uids = [generate_uid() for _ in range(5000)]

    for uid in uids:
        assert_valid_uid(uid)
        assert uid.startswith("2.25.")
        assert uid_problems(uid) == []
    assert len(set(uids)) == len(uids)


def test_longest_root_keeps_uids_unique() -> None:
    root = "1." + "2" * (MAX_ROOT_LENGTH - 2)
    uids = [generate_uid(root) for _ in range(5000)]

    assert len(root) == MAX_ROOT_LENGTH
    assert all(len(uid) <= MAX_UID_LENGTH for uid in uids)
    assert len(set(uids)) == len(uids)


@settings(max_examples=500, deadline=None)
@given(value=st.text(alphabet="0123456789.a ", max_size=70))
def test_uid_problems_matches_rules(value: str) -> None:
    assert (uid_problems(value) == []) is follows_uid_rules(value)


@settings(max_examples=200, deadline=None)
@given(value=st.lists(components, min_size=1, max_size=30).map(".".join))
def test_uid_problems_accepts_or_names_length(value: str) -> None:
    problems = uid_problems(value)

    if len(value) <= MAX_UID_LENGTH:
        assert problems == []
    else:
        assert problems == [f"Longer than 64 characters ({len(value)} characters)."]


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ("1.02.3", "must not start with 0"),
        ("1..3", "Components must not be empty"),
        ("1.2.x", "Only digits and '.' are allowed"),
        ("1." + "2" * MAX_ROOT_LENGTH, "at most 40 characters"),
    ],
)
def test_check_root_rejects_invalid_root(root: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_root(root)


INVALID_UIDS = [
    ("1.2.3a", "Invalid UID (UI): Only digits and '.' are allowed."),
    ("1..2", "Invalid UID (UI): Components must not be empty (no leading, "
     "trailing or double '.')."),
    (".1.2", "Invalid UID (UI): Components must not be empty (no leading, "
     "trailing or double '.')."),
    ("1.2.", "Invalid UID (UI): Components must not be empty (no leading, "
     "trailing or double '.')."),
    ("1.02.3", "Invalid UID (UI): A component must not start with 0 unless it is 0."),
    ("1." + "2" * 70, "Invalid UID (UI): Longer than 64 characters (72 characters)."),
]


@pytest.mark.parametrize("field", ["studyInstanceUID", "seriesInstanceUID"])
@pytest.mark.parametrize(("value", "message"), INVALID_UIDS)
def test_invalid_request_uid_is_rejected(
    client: FlaskClient, field: str, value: str, message: str
) -> None:
    response = client.post("/api/dicom/instances", json={"patientID": "X", field: value})
    body = response.get_json()

    assert response.status_code == 400
    assert body["success"] is False
    assert message in body["errors"][field]


def test_instances_use_configured_root(tmp_path: Path, orthanc: LocalOrthanc) -> None:
    root = "1.2.826.0.1.3680043.10.999"
    app = create_app(app_config(tmp_path, orthanc, DICOM_UID_ROOT=root))

    response = app.test_client().post("/api/dicom/instances", json={"patientID": "X"})
    uids = response.get_json()["data"]["uids"]

    assert response.status_code == 201
    for uid in uids.values():
        assert uid.startswith(root + ".")
        assert_valid_uid(uid)
    assert len(set(uids.values())) == 3
