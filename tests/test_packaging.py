"""Tests that a non-editable install carries every module, template and data file."""

from __future__ import annotations

import configparser
from fnmatch import fnmatch
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent


def setup_options() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def test_every_package_is_installed() -> None:
    include = [
        name.strip()
        for name in setup_options()["options.packages.find"]["include"].split(",")
    ]
    found = set(find_packages(str(ROOT), include=include))
    expected = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for top in ("app", "templates_dump")
        for path in (ROOT / top).rglob("__init__.py")
    }

    assert expected <= found


def test_every_data_file_is_installed() -> None:
    package_data = setup_options()["options.package_data"]
    patterns = {
        package: [pattern.strip() for pattern in value.split(",")]
        for package, value in package_data.items()
    }
    data_files = [
        *(ROOT / "templates_dump").rglob("*.j2"),
        *(ROOT / "templates_dump").rglob("*.json"),
        *(ROOT / "app" / "standard_data").glob("*.json"),
    ]

    for path in data_files:
        package = path.relative_to(ROOT).parts[0]
        relative = str(path.relative_to(ROOT / package))
        assert any(glob_matches(relative, pattern) for pattern in patterns[package]), relative


def glob_matches(relative: str, pattern: str) -> bool:
    """Match like setuptools' package_data globs, where ``*`` stays in one folder."""
    return relative.count("/") == pattern.count("/") and fnmatch(relative, pattern)
