"""Rendering of DCMTK dump-text templates from ``templates_dump/``.

A dump file has one element per line, ``(gggg,eeee) VR [value]``, and
``dump2dcm`` takes everything between the first ``[`` and the last ``]`` of
a line as the value, with ``\\`` separating multiple values. The renderer
therefore writes every template expression as ``[value]`` itself. It
rejects any value that contains a control character, such as a line break,
or a backslash. So no value can start a new element, end its own early, or
become multi-valued. Only :class:`MultiValue`, built from checked parts by
the service itself, may contain backslashes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydicom.charset import python_encoding

from . import dcmtk
from .storage import FileStore

# Specific Character Set (0008,0005) defined terms, PS3.3 section C.12.1.1.2.
LATIN1 = "ISO_IR 100"
UTF8 = "ISO_IR 192"

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class DumpValueError(ValueError):
    """A value that would change the structure of the rendered dump."""


class OptionalUndefined(StrictUndefined):
    """A missing value: false in ``{% if %}``, an error when written."""

    def __bool__(self) -> bool:  # type: ignore[override]
        return False


class MultiValue:
    """Several values of one element, joined with ``\\`` when rendered."""

    def __init__(self, values: Iterable[Any]) -> None:
        self.values = [_checked(str(value)) for value in values]

    def __str__(self) -> str:
        return "\\".join(self.values)


def template_dir() -> Path:
    """Return the folder of the dump templates and the modality table."""
    return Path(str(resources.files("templates_dump")))


def bracket(value: Any) -> str:
    """Render one expression as a bracketed dump value."""
    if value is None:
        return "[]"
    if isinstance(value, MultiValue):
        return f"[{value}]"
    return f"[{_checked(str(value))}]"


def character_set(texts: Iterable[str]) -> str | None:
    """Choose the Specific Character Set that can encode every text.

    Returns ``None`` for plain ASCII (the default repertoire), ``ISO_IR 100``
    when Latin-1 is enough, and ``ISO_IR 192`` (UTF-8) otherwise.
    """
    chosen: str | None = None
    for text in texts:
        if text.isascii():
            continue
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            return UTF8
        chosen = LATIN1
    return chosen


class DumpRenderer:
    """Renders dump templates into bytes that ``dump2dcm`` reads."""

    def __init__(self, directory: Path | None = None) -> None:
        self.environment = Environment(
            loader=FileSystemLoader(str(directory or template_dir())),
            undefined=OptionalUndefined,
            finalize=bracket,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    def render(self, template: str, context: Mapping[str, Any]) -> tuple[bytes, str | None]:
        """Render ``template`` and encode it in the character set it needs.

        Returns the dump bytes and the Specific Character Set written into
        them (``None`` for ASCII).
        """
        charset = character_set(_strings(context))
        text = self.environment.get_template(template).render(
            **context, specific_character_set=charset
        )
        encoding = python_encoding[charset] if charset else "ascii"
        return text.encode(encoding), charset


def _checked(text: str) -> str:
    if _UNSAFE.search(text):
        raise DumpValueError(f"Value {text[:40]!r} contains a control character.")
    if "\\" in text:
        raise DumpValueError(f"Value {text[:40]!r} contains a backslash.")
    return text


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, MultiValue):
        yield from value.values
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def convert(
    dump: bytes, store: FileStore, timeout: float, dictionary: Path | None = None
) -> Path:
    """Convert ``dump`` with ``dump2dcm`` into a temporary file of ``store``.

    Returns the temporary path, which the caller publishes. Its name matches
    no listing pattern, so neither the listing nor Orthanc's worklist plugin
    reads the file before it is whole. On failure both temporary files are
    removed.
    """
    dump_path = store.temporary_path(".dump")
    output_path = store.temporary_path(".part")
    try:
        dump_path.write_bytes(dump)
        dcmtk.dump2dcm(dump_path, output_path, timeout, dictionary)
    except BaseException:
        output_path.unlink(missing_ok=True)
        raise
    finally:
        dump_path.unlink(missing_ok=True)
    return output_path
