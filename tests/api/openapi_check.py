"""Checks an answer of the app against the OpenAPI document: status documented, body valid."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator

from scheduler.api.app import load_openapi


class OpenApiDocument:
    def __init__(self, document: dict[str, Any] | None = None) -> None:
        self.document = document or load_openapi()

    def operations(self) -> set[tuple[str, str]]:
        """(METHOD, path template) of every documented operation."""
        return {
            (method.upper(), path)
            for path, item in self.document["paths"].items()
            for method in item
            if method != "parameters"
        }

    def operation(self, method: str, template: str) -> dict[str, Any]:
        return self.document["paths"][template][method.lower()]

    def response(self, method: str, template: str, status: int) -> dict[str, Any]:
        responses = self.operation(method, template)["responses"]
        assert str(status) in responses, f"{method} {template} answered {status}, not documented ({sorted(responses)})"
        response = responses[str(status)]
        if "$ref" in response:
            name = response["$ref"].rsplit("/", 1)[1]
            response = self.document["components"]["responses"][name]
        return response

    def check(self, method: str, template: str, status: int, content_type: str, body: bytes) -> None:
        """Assert that this answer is one the document describes."""
        response = self.response(method, template, status)
        content = response.get("content")
        if not content:
            assert body == b"", f"{method} {template} {status}: documented without a body, got {body[:200]!r}"
            return
        assert content_type in content, f"{method} {template} {status}: {content_type} not in {sorted(content)}"
        if content_type != "application/json":
            return
        schema = {**content[content_type]["schema"], "components": self.document["components"]}
        errors = sorted(Draft202012Validator(schema).iter_errors(json.loads(body)), key=str)
        assert not errors, f"{method} {template} {status}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
        )
