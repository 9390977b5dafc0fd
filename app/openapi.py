"""The OpenAPI document of every route, generated from the marshmallow schemas."""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import current_app
from marshmallow import Schema

from . import __version__, schemas

# Request bodies by endpoint; a list means a JSON array of that schema.
REQUEST_BODIES: dict[str, tuple[type[Schema], bool, bool]] = {
    # endpoint: (schema, is_array, required)
    "instances.create_instance": (schemas.InstanceSchema, False, True),
    "instances.create_batch": (schemas.InstanceSchema, True, True),
    "instances.send_instance": (schemas.SendSchema, False, False),
    "instances.create_sample": (schemas.SampleSchema, False, False),
    "instances.send_batch": (schemas.BatchSendSchema, False, True),
}

QUERIES: dict[str, type[Schema]] = {
    "instances.list_instances": schemas.PageQuery,
}

_ENVELOPE = {
    "type": "object",
    "required": ["success", "message", "data"],
    "properties": {
        "success": {"type": "boolean"},
        "message": {"type": "string"},
        "data": {},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
}


def register_body(endpoint: str, schema: type[Schema], array: bool = False, required: bool = True) -> None:
    """Document the request body of ``endpoint``, for blueprints defined elsewhere."""
    REQUEST_BODIES[endpoint] = (schema, array, required)


def register_query(endpoint: str, schema: type[Schema]) -> None:
    """Document the query parameters of ``endpoint``."""
    QUERIES[endpoint] = schema


# Request bodies that are not JSON, by endpoint: media type to OpenAPI schema.
FILE_BODIES: dict[str, dict[str, Any]] = {}


def register_file_body(endpoint: str, content: dict[str, Any]) -> None:
    """Document a request body of files, such as DICOM uploads, for ``endpoint``."""
    FILE_BODIES[endpoint] = content


def build_spec() -> dict[str, Any]:
    """Build the OpenAPI 3 document of the current application."""
    spec = APISpec(
        title="DICOM service",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
    )
    spec.components.schema("Envelope", _ENVELOPE)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})

    for schema, _, _ in REQUEST_BODIES.values():
        name = schema.__name__.removesuffix("Schema")
        if name not in spec.components.schemas:
            spec.components.schema(name, schema=schema)

    for rule in current_app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        operations = {
            method.lower(): _operation(rule.endpoint, list(rule.arguments))
            for method in sorted(rule.methods or ())
            if method not in ("HEAD", "OPTIONS")
        }
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(endpoint: str, arguments: list[str]) -> dict[str, Any]:
    view = current_app.view_functions[endpoint]
    operation: dict[str, Any] = {
        "operationId": endpoint,
        "summary": (view.__doc__ or endpoint).strip().splitlines()[0],
        "responses": {
            "default": {
                "description": "JSON envelope",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
            }
        },
    }
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in arguments
    ]
    if endpoint in QUERIES:
        parameters.append({"in": "query", "schema": QUERIES[endpoint]})
    if parameters:
        operation["parameters"] = parameters

    if endpoint in REQUEST_BODIES:
        schema, array, required = REQUEST_BODIES[endpoint]
        reference = {"$ref": f"#/components/schemas/{schema.__name__.removesuffix('Schema')}"}
        body_schema = {"type": "array", "items": reference} if array else reference
        operation["requestBody"] = {
            "required": required,
            "content": {"application/json": {"schema": body_schema}},
        }
    if endpoint in FILE_BODIES:
        operation["requestBody"] = {"required": True, "content": FILE_BODIES[endpoint]}
    if endpoint != "service.health":
        operation["security"] = [{"bearer": []}]
    return operation
