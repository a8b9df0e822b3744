"""The OpenAPI schema's shared parts: the error shape, documented on every operation for the statuses it can have."""

from __future__ import annotations

ERROR_COMPONENT = {
    "type": "object",
    "description": "Every error of the API: a stable code, a sentence, and structured details.",
    "properties": {
        "error": {"type": "string", "example": "validation_error"},
        "message": {"type": "string"},
        "details": {"type": "object", "additionalProperties": True},
    },
    "required": ["error", "message", "details"],
}
ERROR_DESCRIPTIONS = {
    "400": "Invalid input (details name the fields).",
    "401": "Missing or invalid credentials.",
    "403": "A role is missing (details name it).",
    "404": "No such object.",
    "409": "The object is in a state that does not allow this.",
    "413": "The request body is too large.",
    "429": "Too many requests, or a login locked out.",
}


def add_error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular post-processing hook: the error shape under every 4xx status an operation can answer.

    Every operation gets 400, 401, 403 and 429; those with a path parameter 404; writes 409 and 413.
    """
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_COMPONENT
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes = ["400", "401", "403", "429"]
            if "{" in path:
                codes.append("404")
            if method in ("post", "put", "patch", "delete"):
                codes += ["409", "413"]
            for code in codes:
                operation["responses"].setdefault(code, {"description": ERROR_DESCRIPTIONS[code], "content": reference})
            # A view declares another error status by its description alone (an id in the body that names
            # nothing: 404); its body is the same error shape.
            for code, response in operation["responses"].items():
                if code.startswith("4") and "content" not in response:
                    response["content"] = reference
    return result
