"""The handler's API described as OpenAPI 3.1, served at /openapi.json and used to fuzz the handler."""

from __future__ import annotations

from typing import Any

from harness.handler.pipeline import CONTENT_TYPES

MAX_TOP_K = 100

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(version: str) -> dict[str, Any]:
    image_body = {ct: {"schema": {"type": "string", "format": "binary"}} for ct in CONTENT_TYPES}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edgeharness reference inference handler",
            "version": version,
            "description": "Image classification at the edge: decode, preprocess, ONNX Runtime inference, top-k.",
        },
        "paths": {
            "/v1/classify": {
                "post": {
                    "operationId": "classify",
                    "summary": "Classify one image",
                    "parameters": [
                        {
                            "name": "top_k",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 5},
                        }
                    ],
                    "requestBody": {"required": True, "content": image_body},
                    "responses": {
                        "200": _json("Top-k classes", {"$ref": "#/components/schemas/Classification"}),
                        "400": _error("Empty body, corrupt image or malformed query"),
                        "408": _error("Body (or headers) not arrived within the deadline or above the minimum rate"),
                        "413": _error("Body over the size limit"),
                        "415": _error("Missing or unsupported Content-Type"),
                        "422": _error("Image over the pixel limit or the decode budget, or a JPEG with too many scans"),
                        "503": _error(
                            "Overloaded (concurrency, queue, body or decode budget), too many connections, draining "
                            "or model unavailable; see Retry-After"
                        ),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Alive",
                    "responses": {"200": _json("Alive", {"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Can serve now",
                    "responses": {
                        "200": _json("Ready", {"type": "object"}),
                        "503": _json("Not ready", {"type": "object"}),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Error": _ERROR,
                "Classification": {
                    "type": "object",
                    "required": ["region", "pop", "cold_start", "model", "top_k", "timings_ms"],
                    "properties": {
                        "region": {"type": "string"},
                        "pop": {"type": "string"},
                        "cold_start": {"type": "boolean"},
                        "model": {
                            "type": "object",
                            "required": ["name", "version", "sha256"],
                            "properties": {k: {"type": "string"} for k in ("name", "version", "sha256")},
                        },
                        "top_k": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["label", "index", "score"],
                                "properties": {
                                    "label": {"type": "string"},
                                    "index": {"type": "integer"},
                                    "score": {"type": "number"},
                                },
                            },
                        },
                        "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}},
                        "cold_start_phases_ms": {
                            "type": ["object", "null"],
                            "additionalProperties": {"type": "number"},
                        },
                    },
                },
            }
        },
    }
