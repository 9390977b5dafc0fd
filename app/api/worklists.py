"""Routes under ``/api/orthanc``: modality worklist entries served by Orthanc."""

from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("worklists", __name__)
