#!/usr/bin/env python3
"""Validate Triad Resource documents against schemas/resource.schema.json.

Usage: check_resource_schema.py FILE...

Prints one JSON line per file:
  {"file": path, "valid": bool, "errors": ["<json pointer>: <message>", ...]}

Pointer conventions (same as Tests/TriadCoreTests/Fixtures/invalid/expected.json):
  missing required property -> pointer of the missing property itself
  unknown property          -> pointer of that property
  anything else             -> pointer of the offending value

Exits 0 unless the schema itself cannot be loaded or is not a valid schema.
"""
import json
import os
import re
import sys

import jsonschema
from jsonschema import Draft202012Validator, FormatChecker, validators

SCHEMA_PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "schemas", "resource.schema.json"
)


def ecma_pattern(validator, pattern, instance, schema):
    """The "pattern" keyword with ECMA-262 semantics for a final "$": end of input only.

    Python's re treats "$" as also matching before a trailing newline, so
    "abc\\n" would otherwise pass ^[a-z0-9]...$ checks.
    """
    if not validator.is_type(instance, "string"):
        return
    compiled = pattern
    if compiled.endswith("$") and not compiled.endswith("\\$"):
        compiled = compiled[:-1] + "\\Z"
    if not re.search(compiled, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


ResourceValidator = validators.extend(Draft202012Validator, {"pattern": ecma_pattern})


def pointer(parts):
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def located(error):
    """Yield (pointer, message) pairs for one validation error."""
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [p for p in error.validator_value if p not in error.instance]
        for name in missing:
            if error.message.startswith(repr(name)):
                yield pointer(path + [name]), error.message
                return
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        patterns = error.schema.get("patternProperties", {})
        extra = [
            k for k in error.instance
            if k not in known and not any(re.search(p, k) for p in patterns)
        ]
        if extra:
            for name in extra:
                yield pointer(path + [name]), f"additional property {name!r} is not allowed"
            return
    yield pointer(path), error.message


def check(validator, path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        return {"file": path, "valid": False, "errors": [f": cannot read JSON: {e}"]}
    errors = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        errors.extend(f"{ptr}: {msg}" for ptr, msg in located(error))
    return {"file": path, "valid": not errors, "errors": errors}


def main(argv):
    try:
        with open(SCHEMA_PATH, encoding="utf-8") as f:
            schema = json.load(f)
        Draft202012Validator.check_schema(schema)
    except (OSError, ValueError, jsonschema.exceptions.SchemaError) as e:
        print(f"cannot load schema {SCHEMA_PATH}: {e}", file=sys.stderr)
        return 2
    validator = ResourceValidator(schema, format_checker=FormatChecker())
    for path in argv[1:]:
        print(json.dumps(check(validator, path)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
