"""A small DCMTK data dictionary with only the elements that the dump templates write.

Every DCMTK tool loads its data dictionary when it starts. Debian's DCMTK
3.6.7 reads ``dicom.dic`` and ``private.dic`` (about 8,000 entries), and
that takes most of a ``dump2dcm`` run for the small files of this service.
On a 2-core machine one run took 17 to 25 ms with both files and about
5 ms with this dictionary. ``bench/run.py`` measures both.

``dump2dcm`` takes each element's VR from the dump line, so it writes the
same bytes with this dictionary as with the full one, provided that the
dictionary keeps the file meta information (group 0002), the item
and delimitation tags (group FFFE) and the range entries such as group
lengths. ``bench/run.py`` checks that both dictionaries give identical
files for the instance that it creates.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .dump import template_dir

logger = logging.getLogger(__name__)

# Glob patterns of the public dictionary as DCMTK packages install it.
DICTIONARY_GLOBS = (
    "/usr/share/libdcmtk*/dicom.dic",
    "/usr/share/dcmtk*/dicom.dic",
    "/usr/local/share/dcmtk*/dicom.dic",
)

_TEMPLATE_TAG = re.compile(r"^\s*\(([0-9a-fA-F]{4}),([0-9a-fA-F]{4})\)", re.MULTILINE)
_ENTRY_TAG = re.compile(r"^\(([0-9a-fA-F]{4}),([0-9a-fA-F]{4})\)\s")


def template_tags(directory: Path | None = None) -> set[str]:
    """Return every ``gggg,eeee`` tag (upper case) written by a ``*.j2`` template."""
    tags: set[str] = set()
    for path in sorted((directory or template_dir()).rglob("*.j2")):
        for group, element in _TEMPLATE_TAG.findall(path.read_text(encoding="utf-8")):
            tags.add(f"{group.upper()},{element.upper()}")
    return tags


def source_dictionaries() -> list[Path]:
    """Return the full dictionary files that DCMTK would load.

    These are the files of ``DCMDICTPATH`` when it is set, otherwise the
    first ``dicom.dic`` of :data:`DICTIONARY_GLOBS`, or none.
    """
    configured = os.environ.get("DCMDICTPATH", "")
    if configured:
        return [Path(part) for part in configured.split(os.pathsep) if part]

    from glob import glob

    for pattern in DICTIONARY_GLOBS:
        found = sorted(glob(pattern), reverse=True)
        if found:
            return [Path(found[0])]
    return []


def select_entries(lines: Iterable[str], tags: set[str]) -> list[str]:
    """Keep the dictionary lines that ``dump2dcm`` needs for ``tags``.

    Kept are the entries of ``tags``, of groups 0002 and FFFE, and every
    public range entry (a tag with ``-u-``, ``-o-`` or ``xx``), which covers
    group lengths and private creator elements.
    """
    selected = []
    for line in lines:
        if not line.startswith("("):
            continue
        match = _ENTRY_TAG.match(line)
        if match is None:
            # A range entry. Entries of private dictionaries quote their creator.
            if '"' not in line.split(")", 1)[0]:
                selected.append(line)
            continue
        group, element = match.group(1).upper(), match.group(2).upper()
        if group in ("0002", "FFFE") or f"{group},{element}" in tags:
            selected.append(line)
    return selected


def build(cache_dir: Path | None = None) -> Path | None:
    """Write the template dictionary and return its path, or ``None`` to use DCMTK's own.

    The file is named after a hash of its content, so workers that start
    together write the same file and a changed template gives a new one.
    """
    sources = source_dictionaries()
    readable = [path for path in sources if path.is_file()]
    if not readable:
        logger.warning(
            "No DCMTK data dictionary found (DCMDICTPATH or %s); dump2dcm loads "
            "its default dictionary.",
            ", ".join(DICTIONARY_GLOBS),
        )
        return None

    tags = template_tags()
    lines: list[str] = []
    for path in readable:
        lines.extend(
            select_entries(path.read_text(encoding="latin-1").splitlines(), tags)
        )
    text = "# Generated from " + ", ".join(map(str, readable)) + "\n"
    text += "\n".join(lines) + "\n"

    digest = hashlib.sha256(text.encode("latin-1")).hexdigest()[:16]
    folder = cache_dir or Path(tempfile.gettempdir()) / f"dicom-service-{os.getuid()}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = folder / f"template-elements-{digest}.dic"
    if not target.is_file():
        partial = folder / f".{target.name}.{os.getpid()}"
        partial.write_text(text, encoding="latin-1")
        os.replace(partial, target)
    logger.info(
        "dump2dcm uses %s: %d dictionary entries for %d template tags",
        target, len(lines), len(tags),
    )  # fmt: skip
    return target
