"""Fixtures: a real Orthanc on free loopback ports, and the app against it."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.local_orthanc import LocalOrthanc

from .support import app_config, start_orthanc


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalOrthanc]:
    """One Orthanc with the worklist plugin for the whole test session."""
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., LocalOrthanc]]:
    """Start extra Orthanc servers (for fault tests); all are stopped afterwards."""
    started: list[LocalOrthanc] = []

    def start(**options: Any) -> LocalOrthanc:
        server = start_orthanc(tmp_path / f"orthanc-{len(started)}", **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def orthanc_api(orthanc: LocalOrthanc) -> requests.Session:
    """A session for Orthanc's REST API; use ``orthanc.settings.url`` as base."""
    session = requests.Session()
    session.trust_env = False
    return session


@pytest.fixture
def app(tmp_path: Path, orthanc: LocalOrthanc) -> Flask:
    """The app with its own instance folder and the session Orthanc's worklist folder."""
    worklists = orthanc.settings.worklist_dir
    shutil.rmtree(worklists, ignore_errors=True)
    worklists.mkdir(parents=True)
    application = create_app(app_config(tmp_path, orthanc))
    application.testing = True
    return application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
