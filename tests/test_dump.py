"""Tests of the dump renderer: no value can change the structure of a dump."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.dump import (
    LATIN1,
    UTF8,
    DumpRenderer,
    DumpValueError,
    MultiValue,
    character_set,
)

TEMPLATE = "(0010,0010) PN {{ name }}\n(0010,0020) LO {{ id }}\n"


@pytest.fixture
def renderer(tmp_path: Path) -> DumpRenderer:
    (tmp_path / "test.j2").write_text(TEMPLATE)
    return DumpRenderer(tmp_path)


def dump_to_dicom(tmp_path: Path, dump: bytes) -> str:
    (tmp_path / "in.dump").write_bytes(dump)
    subprocess.run(
        ["dump2dcm", "--write-dataset", str(tmp_path / "in.dump"), str(tmp_path / "out.dcm")],
        check=True, capture_output=True,
    )  # fmt: skip
    return subprocess.run(
        ["dcmdump", "--print-all", str(tmp_path / "out.dcm")],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


@pytest.mark.parametrize(
    "value",
    ["a\nb", "a\r(0010,0030) DA [20000101]", "a\x00b", "a\\b", "a\x1bb", "a\x85b"],
)
def test_render_rejects_structural_values(renderer: DumpRenderer, value: str) -> None:
    with pytest.raises(DumpValueError):
        renderer.render("test.j2", {"name": value, "id": "1"})


def test_brackets_stay_inside_value(renderer: DumpRenderer, tmp_path: Path) -> None:
    name = "A] # (0010,0030) DA [20000101"

    dump, _ = renderer.render("test.j2", {"name": name, "id": "[x]"})
    text = dump_to_dicom(tmp_path, dump)

    assert f"(0010,0010) PN [{name}]" in text
    assert "(0010,0020) LO [[x]]" in text
    assert not any(line.startswith("(0010,0030)") for line in text.splitlines())


def test_empty_and_none_render_empty_element(renderer: DumpRenderer) -> None:
    dump, _ = renderer.render("test.j2", {"name": None, "id": ""})

    assert dump.decode() == "(0010,0010) PN []\n(0010,0020) LO []\n"


def test_missing_value_raises(renderer: DumpRenderer) -> None:
    with pytest.raises(Exception, match="id"):
        renderer.render("test.j2", {"name": "A"})


def test_multivalue_joins_checked_parts() -> None:
    assert str(MultiValue(["ORIGINAL", "PRIMARY"])) == "ORIGINAL\\PRIMARY"
    with pytest.raises(DumpValueError):
        MultiValue(["A\\B"])


@pytest.mark.parametrize(
    ("texts", "expected"),
    [(["Doe^John"], None), (["Müller^Jürgen"], LATIN1), (["Müller", "Ελληνικά"], UTF8),
     (["山田^太郎"], UTF8)],
)  # fmt: skip
def test_character_set_choice(texts: list[str], expected: str | None) -> None:
    assert character_set(texts) == expected


def test_latin1_dump_is_encoded_latin1(renderer: DumpRenderer) -> None:
    dump, charset = renderer.render("test.j2", {"name": "Müller", "id": "1"})

    assert charset == LATIN1
    assert "Müller".encode("latin-1") in dump
