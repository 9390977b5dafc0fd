"""Persistent mapping from grouping keys to the UIDs that repair generated.

A repaired file gets the same Study, Series or SOP Instance UID as every
earlier file with the same key, within one upload and across uploads. The
mapping is a SQLite database in the instance folder. Each lookup runs in one
``BEGIN IMMEDIATE`` transaction, so concurrent gunicorn workers that ask
for the same key get the UID that the first of them stored.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

# The leading dot keeps the database out of the instance listing.
DATABASE_NAME = ".import-uids.sqlite3"

# Seconds that a worker waits for another worker's transaction to end.
LOCK_TIMEOUT = 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generated_uid (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    uid TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (kind, key)
)
"""


class UidMap:
    """The generated UIDs of one instance folder, keyed by kind and key."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / DATABASE_NAME

    def uid_for(
        self, kind: str, key: Sequence[str], generate: Callable[[], str]
    ) -> tuple[str, bool]:
        """Return the UID stored for ``kind`` and ``key``, generating it if absent.

        The second value is true when this call generated and stored the UID.
        """
        encoded = json.dumps(list(key), ensure_ascii=False)
        candidate = generate()
        connection = sqlite3.connect(
            self.path, timeout=LOCK_TIMEOUT, isolation_level=None
        )
        try:
            connection.execute(_SCHEMA)
            connection.execute("BEGIN IMMEDIATE")
            inserted = connection.execute(
                "INSERT OR IGNORE INTO generated_uid (kind, key, uid) VALUES (?, ?, ?)",
                (kind, encoded, candidate),
            ).rowcount
            row = connection.execute(
                "SELECT uid FROM generated_uid WHERE kind = ? AND key = ?",
                (kind, encoded),
            ).fetchone()
            connection.execute("COMMIT")
        finally:
            connection.close()

        uid = str(row[0])
        if inserted:
            logger.info("Generated %s UID %s for key %s", kind, uid, encoded)
        return uid, bool(inserted)
