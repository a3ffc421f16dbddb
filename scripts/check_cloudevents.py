#!/usr/bin/env python3
"""Validate Triad CloudEvents against schemas/cloudevent.schema.json, and the data of registry
events (io.triad.resource.*, io.triad.binding.*) against schemas/resource.schema.json.

Usage: check_cloudevents.py FILE...   (each file one event, as JSON)

Prints one JSON line per file: {"file": path, "valid": bool, "errors": ["<json pointer>: <message>", ...]}
Exits 0 unless a schema cannot be loaded.
"""
import json
import os
import sys

from jsonschema import FormatChecker

# One rule for "pattern" and one JSON pointer in every checker (this folder is on sys.path).
from check_resource_schema import ResourceValidator, pointer

HERE = os.path.dirname(os.path.abspath(__file__))


def validator(name):
    with open(os.path.join(HERE, "..", "schemas", name)) as f:
        schema = json.load(f)
    ResourceValidator.check_schema(schema)
    return ResourceValidator(schema, format_checker=FormatChecker())


def main(paths):
    event_validator, resource_validator = validator("cloudevent.schema.json"), validator("resource.schema.json")
    for path in paths:
        errors = []
        try:
            with open(path) as f:
                event = json.load(f)
        except (OSError, ValueError) as e:
            errors.append(f": not JSON ({e})")
            event = None
        if event is not None:
            errors += [f"{pointer(e.absolute_path)}: {e.message}" for e in event_validator.iter_errors(event)]
            kind = event.get("type", "") if isinstance(event, dict) else ""
            if kind.startswith(("io.triad.resource.", "io.triad.binding.")) and isinstance(event.get("data"), dict):
                errors += [f"/data{pointer(e.absolute_path)}: {e.message}" for e in resource_validator.iter_errors(event["data"])]
        print(json.dumps({"file": path, "valid": not errors, "errors": errors}))


if __name__ == "__main__":
    main(sys.argv[1:])
