"""Orthanc's REST API, used to confirm deliveries and report health."""

from __future__ import annotations

import logging
from typing import Any

import requests

logger = logging.getLogger(__name__)


class OrthancError(Exception):
    """Orthanc's REST API could not be reached or returned an error."""


class OrthancClient:
    """A small client for the REST API at ``base_url``."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        # Orthanc runs beside the service; proxy settings of the environment
        # must not redirect these calls.
        self.session.trust_env = False

    def system(self) -> dict[str, Any]:
        """Return ``GET /system``: name, version, AE title and ports."""
        return self._request("GET", "/system")

    def find_instance(self, sop_instance_uid: str) -> str | None:
        """Return the Orthanc ID of the instance with ``sop_instance_uid``, if stored."""
        matches = self._request("POST", "/tools/lookup", data=sop_instance_uid)
        for match in matches:
            if match.get("Type") == "Instance":
                return str(match["ID"])
        return None

    def instance_tags(self, orthanc_id: str) -> dict[str, Any]:
        """Return the simplified tags of a stored instance."""
        return self._request("GET", f"/instances/{orthanc_id}/simplified-tags")

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = self.base_url + path
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            response.raise_for_status()
            return response.json()
        except (requests.RequestException, ValueError) as error:
            raise OrthancError(f"{method} {url} failed: {error}") from error
