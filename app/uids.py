"""Generation and checking of UIDs by the rules of PS3.5 section 9.1."""

from __future__ import annotations

import uuid

from pydicom.uid import UID

MAX_UID_LENGTH = 64

# A UUID is 128 bits, at most 39 decimal digits. PS3.5 section B.2 derives
# a UID from a UUID as "2.25." followed by the UUID as one decimal integer.
UUID_DIGITS = 39

MAX_ROOT_LENGTH = 40


def generate_uid(root: str = "") -> str:
    """Return a new UID, unique across processes and machines.

    Without ``root`` the UID is ``2.25.<UUID as an integer>`` (PS3.5 section
    B.2). With an organisation ``root`` the UID is ``<root>.<suffix>`` where
    the suffix is a random UUID as an integer, shortened to fit 64
    characters. With a root of 24 characters or less all 128 bits are kept,
    and the longest root allowed (40 characters) still leaves 23 random digits.
    """
    if not root:
        return f"2.25.{uuid.uuid4().int}"

    room = MAX_UID_LENGTH - len(root) - 1
    if room < 1:
        raise ValueError(f"UID root {root!r} leaves no room for a suffix.")

    # A leading zero is not allowed in a component, so the suffix is taken
    # from the UUID's integer without them.
    suffix = str(uuid.uuid4().int)[:room].lstrip("0") or "1"
    return f"{root}.{suffix}"


def uid_problems(value: str) -> list[str]:
    """List each PS3.5 section 9.1 rule that ``value`` breaks (empty when valid)."""
    problems: list[str] = []

    if len(value) > MAX_UID_LENGTH:
        problems.append(
            f"Longer than {MAX_UID_LENGTH} characters ({len(value)} characters)."
        )
    if not value:
        problems.append("Must not be empty.")
        return problems

    if any(character not in "0123456789." for character in value):
        problems.append("Only digits and '.' are allowed.")
        return problems

    components = value.split(".")
    if any(component == "" for component in components):
        problems.append("Components must not be empty (no leading, trailing or double '.').")
    if any(len(component) > 1 and component[0] == "0" for component in components):
        problems.append("A component must not start with 0 unless it is 0.")
    if not problems and not UID(value).is_valid:
        problems.append("Not a valid UID.")
    return problems


def check_root(root: str) -> None:
    """Raise ``ValueError`` if ``root`` cannot prefix generated UIDs."""
    problems = uid_problems(root)
    if problems:
        raise ValueError(f"DICOM_UID_ROOT {root!r} is not a valid UID: {problems[0]}")
    if len(root) > MAX_ROOT_LENGTH:
        raise ValueError(
            f"DICOM_UID_ROOT {root!r} is {len(root)} characters long. Use a root "
            f"of at most {MAX_ROOT_LENGTH} characters so that a random suffix of "
            "at least 23 digits fits."
        )
