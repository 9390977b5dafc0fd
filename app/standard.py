"""Build and refresh the DICOM standard data that ``dicom-validator`` reads.

``dicom-validator`` reads PS3.3, PS3.4 and PS3.6 from three JSON files
(``dict_info.json``, ``iod_info.json``, ``module_info.json``). Its own reader
makes them from the standard's DocBook XML, which it downloads. This module
makes the same files offline from the JSON that the ``dicom-standard`` package
(Innolitics, version 0.1.0 on PyPI) installs into ``<prefix>/standard``, and
the result is kept in ``app/standard_data`` as the default edition.

Commands::

    python -m app.standard build [--source DIR] [--output DIR]
    python -m app.standard refresh --edition 2025b --output DIR [--cache DIR]

``build`` needs no network. ``refresh`` is the only step that downloads: it
runs ``dicom-validator``'s ``EditionReader``, which fetches the DocBook files
of the edition from dicom.nema.org.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import BUNDLED_STANDARD_DIR as BUNDLED_DIR
from .iod import EDITION_FILE, STANDARD_FILES, read_edition

logger = logging.getLogger(__name__)

SOURCE_PACKAGE = "dicom-standard"
SOURCE_FILES = (
    "attributes.json",
    "ciods.json",
    "ciod_to_modules.json",
    "ciod_to_fg_macros.json",
    "modules.json",
    "module_to_attributes.json",
    "macros.json",
    "macro_to_attributes.json",
    "sops.json",
    "references.json",
)

# dicom-standard 0.1.0 (published on PyPI in April 2020) does not name the
# edition it was parsed from. Its data marks elements as "RET (2019c)", so
# the edition lies between 2019c and the one current in April 2020.
BUNDLED_EDITION = "2019c-2020b (dicom-standard 0.1.0)"

# The Shared and Per-frame Functional Groups Sequences. Their items contain the
# IOD's functional group macros, which dicom-validator inserts in place of the
# placeholder reference "FuncGroup".
FUNCTIONAL_GROUP_SEQUENCES = ("(5200,9229)", "(5200,9230)")
ATTRIBUTE_TYPES = {"1", "1C", "2", "2C", "3"}
MACRO_PREFIX = "macro:"
DOCBOOK = "{http://docbook.org/ns/docbook}"


class StandardBuildError(RuntimeError):
    """The standard data could not be built or refreshed."""


@dataclass
class BuildSummary:
    """Counts and timing of one build, for the log and the command output."""

    output: Path
    edition: str
    sop_classes: int
    modules: int
    attributes: int
    conditions: int
    unparsed_conditions: int
    seconds: float

    def describe(self) -> str:
        size = sum((self.output / name).stat().st_size for name in STANDARD_FILES)
        return (
            f"Wrote DICOM standard {self.edition} to {self.output}: "
            f"{self.sop_classes} SOP Classes, {self.modules} modules and macros, "
            f"{self.attributes} attribute entries, {self.conditions} conditions "
            f"parsed, {self.unparsed_conditions} left as user-defined; "
            f"{size / 1e6:.1f} MB in {self.seconds:.0f} s."
        )


def source_dir() -> Path:
    """Find the JSON folder that the ``dicom-standard`` package installed.

    Raises
    ------
    StandardBuildError
        If the package is not installed or its files are missing.
    """
    try:
        files = metadata.files(SOURCE_PACKAGE) or []
    except metadata.PackageNotFoundError:
        raise StandardBuildError(
            f"The {SOURCE_PACKAGE!r} package is not installed; install it with "
            f"'pip install {SOURCE_PACKAGE}' or pass --source."
        ) from None

    for entry in files:
        if entry.name == "attributes.json" and entry.parent.name == "standard":
            return Path(str(entry.locate())).resolve().parent
    raise StandardBuildError(
        f"The {SOURCE_PACKAGE!r} package lists no standard/attributes.json; "
        "reinstall it or pass --source."
    )


def build(source: Path | None = None, output: Path | None = None) -> BuildSummary:
    """Convert the ``dicom-standard`` JSON into the files ``dicom-validator`` reads.

    The files are written to a temporary folder first and moved into
    ``output`` (default: the bundled folder) only when all of them are complete.
    """
    started = time.monotonic()
    source = source or source_dir()
    output = output or BUNDLED_DIR
    tables = _read_source(source)

    converter = _Converter(tables)
    dict_info = converter.dictionary()
    module_info = converter.modules()
    iod_info = converter.iods()

    edition = {
        "edition": BUNDLED_EDITION,
        "source": f"{SOURCE_PACKAGE} {metadata.version(SOURCE_PACKAGE)}",
        "converter": "app.standard build",
        "dicomValidator": metadata.version("dicom-validator"),
    }
    _write_atomically(
        output,
        {
            "dict_info.json": dict_info,
            "iod_info.json": iod_info,
            "module_info.json": module_info,
            EDITION_FILE: edition,
        },
    )
    summary = BuildSummary(
        output=output,
        edition=BUNDLED_EDITION,
        sop_classes=len(iod_info),
        modules=len(module_info),
        attributes=converter.attribute_count,
        conditions=converter.parsed_conditions,
        unparsed_conditions=converter.unparsed_conditions,
        seconds=time.monotonic() - started,
    )
    logger.info(summary.describe())
    return summary


def refresh(edition: str, output: Path, cache: Path) -> Path:
    """Download an edition's DocBook with ``dicom-validator`` and install its JSON.

    ``cache`` keeps the downloaded DocBook and the JSON that
    ``EditionReader`` makes from it, so a second refresh of the same edition
    does not download again.

    Raises
    ------
    StandardBuildError
        If the edition is unknown, the download fails or the DocBook cannot
        be parsed.
    """
    from dicom_validator.spec_reader.edition_reader import EditionReader

    cache.mkdir(parents=True, exist_ok=True)
    reader = EditionReader(cache)
    resolved = reader.get_edition(edition)
    if resolved is None:
        raise StandardBuildError(
            f"DICOM edition {edition!r} was not found in the list of editions "
            f"at {reader.base_url}; check the name (for example 2025b) and the "
            "network connection."
        )

    if reader.get_edition_path(resolved) is None:
        raise StandardBuildError(
            f"Downloading or parsing DICOM edition {resolved} failed; see the "
            f"log above. Partial downloads stay in {cache}."
        )

    json_dir = reader.json_path(resolved)
    contents: dict[str, Any] = {}
    for name in STANDARD_FILES:
        with open(json_dir / name, encoding="utf-8") as handle:
            contents[name] = json.load(handle)
    contents[EDITION_FILE] = {
        "edition": resolved,
        "source": f"DocBook from {reader.base_url}",
        "converter": "dicom-validator EditionReader",
        "dicomValidator": metadata.version("dicom-validator"),
    }
    _write_atomically(output, contents)
    logger.info("Installed DICOM standard %s in %s", read_edition(output), output)
    return output


def _read_source(source: Path) -> dict[str, Any]:
    missing = [name for name in SOURCE_FILES if not (source / name).is_file()]
    if missing:
        raise StandardBuildError(
            f"{', '.join(missing)} not found in {str(source)!r}; pass the "
            f"'standard' folder of the {SOURCE_PACKAGE!r} package as --source."
        )

    tables: dict[str, Any] = {}
    for name in SOURCE_FILES:
        with open(source / name, encoding="utf-8") as handle:
            tables[name.removesuffix(".json")] = json.load(handle)
    return tables


def _write_atomically(output: Path, contents: dict[str, Any]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".standard-", dir=output.parent))
    try:
        for name, value in contents.items():
            with open(staging / name, "w", encoding="utf-8") as handle:
                json.dump(value, handle, sort_keys=True, separators=(",", ":"))
                handle.write("\n")
        output.mkdir(parents=True, exist_ok=True)
        for name in contents:
            (staging / name).replace(output / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _Converter:
    """Turns the ``dicom-standard`` tables into ``dicom-validator``'s dicts."""

    def __init__(self, tables: dict[str, Any]) -> None:
        from dicom_validator.spec_reader.condition_parser import ConditionParser
        from dicom_validator.spec_reader.enum_parser import EnumParser

        self.tables = tables
        self.attribute_count = 0
        self.parsed_conditions = 0
        self.unparsed_conditions = 0
        self._dictionary = self.dictionary()
        self._conditions = ConditionParser(self._dictionary)
        self._enums = EnumParser(self._linked_section, self._conditions)
        self._sections = _sections_by_label(tables["references"])
        self._section_nodes: dict[str, Any] = {}

    def dictionary(self) -> dict[str, dict[str, str]]:
        """Return PS3.6's data elements keyed by ``(GGGG,EEEE)``."""
        dictionary: dict[str, dict[str, str]] = {}
        for row in self.tables["attributes"]:
            dictionary[_tag_key(row["tag"])] = {
                "name": row["name"],
                "vr": row["valueRepresentation"],
                "vm": row["valueMultiplicity"],
                "prop": "RET" if row["retired"] == "Y" else "",
            }
        return dictionary

    def modules(self) -> dict[str, dict[str, Any]]:
        """Return the attribute tree of every module and macro an IOD uses."""
        used_modules = {row["moduleId"] for row in self.tables["ciod_to_modules"]}
        used_macros = {row["macroId"] for row in self.tables["ciod_to_fg_macros"]}

        modules: dict[str, dict[str, Any]] = {
            module_id: {} for module_id in sorted(used_modules)
        }
        for row in self.tables["module_to_attributes"]:
            if row["moduleId"] in used_modules:
                self._add_attribute(modules[row["moduleId"]], row)

        for macro_id in sorted(used_macros):
            modules[MACRO_PREFIX + macro_id] = {}
        for row in self.tables["macro_to_attributes"]:
            if row["macroId"] in used_macros:
                self._add_attribute(modules[MACRO_PREFIX + row["macroId"]], row)

        for module in modules.values():
            for tag in FUNCTIONAL_GROUP_SEQUENCES:
                if tag in module:
                    module[tag].setdefault("items", {})["include"] = [{"ref": "FuncGroup"}]
        return modules

    def iods(self) -> dict[str, dict[str, Any]]:
        """Return the modules and functional group macros of each SOP Class."""
        ciod_ids = {row["name"]: row["id"] for row in self.tables["ciods"]}
        module_names = {row["id"]: row["name"] for row in self.tables["modules"]}
        macro_names = {row["id"]: row["name"] for row in self.tables["macros"]}

        modules: dict[str, dict[str, Any]] = {}
        for row in self.tables["ciod_to_modules"]:
            name = module_names.get(row["moduleId"], row["moduleId"])
            modules.setdefault(row["ciodId"], {})[name] = self._usage(
                row["moduleId"], row["usage"], row["conditionalStatement"]
            )

        # NOTE: ciod_to_fg_macros.json of dicom-standard 0.1.0 has no "shall not
        # be used as a Shared Functional Group" notes, so the shared and
        # per-frame placement of a macro is not checked with this edition.
        macros: dict[str, dict[str, Any]] = {}
        for row in self.tables["ciod_to_fg_macros"]:
            name = macro_names.get(row["macroId"], row["macroId"])
            macros.setdefault(row["ciodId"], {})[name] = self._usage(
                MACRO_PREFIX + row["macroId"], row["usage"], row["conditionalStatement"]
            )

        iods: dict[str, dict[str, Any]] = {}
        for sop in self.tables["sops"]:
            ciod_id = ciod_ids.get(sop["ciod"])
            if ciod_id is None or ciod_id not in modules:
                logger.warning(
                    "SOP Class %s (%s) names IOD %r, which has no module table; skipped.",
                    sop["id"], sop["name"], sop["ciod"],
                )
                continue
            iods[sop["id"]] = {
                "title": f"{sop['ciod']} IOD",
                "modules": modules[ciod_id],
                "group_macros": macros.get(ciod_id, {}),
            }
        return iods

    def _usage(self, ref: str, usage: str, statement: str | None) -> dict[str, Any]:
        use = f"{usage} - {statement}" if statement else usage
        entry: dict[str, Any] = {"ref": ref, "use": use}
        if len(use) > 1:
            entry["cond"] = self._condition(use)
        return entry

    def _add_attribute(self, module: dict[str, Any], row: dict[str, Any]) -> None:
        attribute_type = row["type"]
        tags = [_tag_key(part) for part in row["path"].split(":")[1:]]
        if attribute_type not in ATTRIBUTE_TYPES or not tags:
            return
        # NOTE: dicom-validator parses only repeating groups ("60xx"), so
        # the few retired elements with an "x" in the element number are left out.
        if any("x" in tag[6:] for tag in tags):
            return

        parent = module
        for tag in tags[:-1]:
            parent = parent.setdefault(tag, {"name": self._name(tag), "type": "3"})
            parent = parent.setdefault("items", {})

        tag = tags[-1]
        if tag in parent:
            return
        entry: dict[str, Any] = {"name": self._name(tag), "type": attribute_type}
        text, node = _description(row["description"])
        if attribute_type in ("1C", "2C", "3"):
            condition = self._condition(text)
            if condition["type"] != "U":
                entry["cond"] = condition
        enums = self._enum_values(tag, node, row.get("externalReferences") or [])
        if enums:
            entry["enums"] = enums
        parent[tag] = entry
        self.attribute_count += 1

    def _condition(self, text: str) -> dict[str, Any]:
        from dicom_validator.spec_reader.condition import ConditionType

        condition = self._conditions.parse(text)
        mentions_condition = any(
            phrase in text.lower()
            for phrase in ("required if", "shall be present if", "shall not be present if")
        )
        if condition.type == ConditionType.UserDefined:
            if mentions_condition:
                self.unparsed_conditions += 1
        else:
            self.parsed_conditions += 1
        result: dict[str, Any] = json.loads(json.dumps(condition.result_dict()))
        return result

    def _enum_values(
        self, tag: str, node: Any, references: Iterable[dict[str, str]]
    ) -> list[dict[str, Any]]:
        from pydicom.valuerep import VR

        info = self._dictionary.get(tag)
        try:
            vr = VR(info["vr"]) if info else None
        except ValueError:
            vr = None  # "US or SS" and the like have no enumerated values
        if vr is None:
            return []
        for reference in references:
            label = _section_label(reference.get("sourceUrl", ""))
            if label:
                _append_xref(node, label)

        try:
            parsed = self._enums.parse(node, vr)
        except ValueError:
            # A linked section listed non-numeric values for a numeric VR,
            # so the values belong to another attribute.
            return []

        values = []
        for enum in parsed:
            if "tag" in enum:
                if enum["tag"] != tag:
                    continue
                enum = {key: value for key, value in enum.items() if key != "tag"}
            values.append(json.loads(json.dumps(enum, default=_condition_dict)))
        return values

    def _linked_section(self, label: str) -> Any:
        if label not in self._section_nodes:
            html = self._sections.get(label)
            self._section_nodes[label] = None if html is None else _description(html)[1]
        return self._section_nodes[label]

    def _name(self, tag: str) -> str:
        info = self._dictionary.get(tag)
        return info["name"] if info else tag


def _tag_key(text: str) -> str:
    """Return a tag as ``(GGGG,EEEE)`` with a lowercase ``x`` in repeating groups."""
    digits = text.strip("()").replace(",", "")
    return f"({digits[:4].upper()},{digits[4:].upper()})".replace("X", "x")


def _section_label(url: str) -> str:
    _, _, fragment = url.partition("#")
    return fragment.removeprefix("sect_") if fragment.startswith("sect_") else ""


def _sections_by_label(references: dict[str, str]) -> dict[str, str]:
    sections: dict[str, str] = {}
    for url, html in references.items():
        label = _section_label(url)
        if label:
            sections.setdefault(label, html)
    return sections


def _condition_dict(value: Any) -> Any:
    return value.result_dict()


def _description(html: str) -> tuple[str, Any]:
    """Return the plain text of a description and its enumerated values as DocBook.

    ``dicom-validator``'s ``EnumParser`` reads ``variablelist`` elements whose
    title is "Enumerated Values…". The HTML of ``dicom-standard`` has a
    ``<strong>`` title and a ``<dl>`` list instead, so they are rebuilt here.
    """
    from lxml import etree
    from lxml import html as lxml_html

    node = etree.Element(DOCBOOK + "entry")
    html = html.strip()
    if not html:
        return "", node
    # A table cell's own <td> wrapper would make all its content look nested.
    if html.startswith("<td") and html.endswith("</td>"):
        html = html[html.index(">") + 1 : -len("</td>")]
    root = lxml_html.fragment_fromstring(html, create_parent="div")
    text = " ".join(part.strip() for part in root.itertext() if part.strip())
    text = text.replace("\u00a0", " ")

    for title in root.iter("strong"):
        if not _is_direct_content(title):
            continue
        title_text = " ".join("".join(title.itertext()).split())
        block = title.getparent()
        terms_list = block.getnext() if block is not None else None
        if terms_list is None or terms_list.tag != "dl":
            continue
        variable_list = etree.SubElement(node, DOCBOOK + "variablelist")
        etree.SubElement(variable_list, DOCBOOK + "title").text = title_text
        for term in terms_list.iter("dt"):
            entry = etree.SubElement(variable_list, DOCBOOK + "varlistentry")
            etree.SubElement(entry, DOCBOOK + "term").text = " ".join(
                "".join(term.itertext()).split()
            )
    return text, node


def _is_direct_content(element: Any) -> bool:
    """Tell whether ``element`` belongs to its section itself.

    DocBook keeps enumerated values of a section as its own ``variablelist``
    children, and ``EnumParser`` reads only those. In the HTML the same
    lists can sit in list items, in table cells (the values of another
    attribute) or in a nested subsection, and those are skipped here.
    """
    sections = 0
    for ancestor in element.iterancestors():
        if ancestor.tag in ("li", "td", "th", "table"):
            return False
        if ancestor.tag == "div" and _starts_with_heading(ancestor):
            sections += 1
    return sections <= 1


def _starts_with_heading(div: Any) -> bool:
    first = next(iter(div), None)
    if first is None or first.tag != "div":
        return False
    return any(
        descendant.tag in ("h1", "h2", "h3", "h4", "h5", "h6") for descendant in first.iter()
    )


def _append_xref(node: Any, label: str) -> None:
    from lxml import etree

    para = etree.SubElement(node, DOCBOOK + "para")
    etree.SubElement(para, DOCBOOK + "xref").set("linkend", f"sect_{label}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``build`` or ``refresh`` command; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m app.standard",
        description="Build or refresh the DICOM standard data for IOD validation.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build_parser = commands.add_parser(
        "build", help="convert the installed dicom-standard package (offline)"
    )
    build_parser.add_argument(
        "--source", type=Path, help="folder with the dicom-standard JSON files "
        "(default: the installed package's 'standard' folder)"
    )
    build_parser.add_argument(
        "--output", type=Path, default=BUNDLED_DIR,
        help=f"folder to write the three JSON files to (default: {BUNDLED_DIR})",
    )

    refresh_parser = commands.add_parser(
        "refresh", help="download an edition's DocBook from NEMA and convert it"
    )
    refresh_parser.add_argument(
        "--edition", required=True,
        help="edition such as 2025b, a year for its latest edition, or 'current'",
    )
    refresh_parser.add_argument(
        "--output", type=Path, required=True,
        help="folder to write the JSON files to; point DICOM_STANDARD_DIR at it",
    )
    refresh_parser.add_argument(
        "--cache", type=Path, default=Path.home() / "dicom-validator",
        help="folder for the downloaded DocBook files (default: ~/dicom-validator)",
    )

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "build":
            build(args.source, args.output)
        else:
            refresh(args.edition, args.output, args.cache)
    except StandardBuildError as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
