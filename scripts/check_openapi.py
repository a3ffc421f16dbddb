#!/usr/bin/env python3
"""Check the Triad server against schemas/openapi.yaml (and the document itself).

Usage:
  check_openapi.py [--spec PATH] routes FILE
      FILE: one route per line, "METHOD /path/{param}" (blank lines and "#" comments
      ignored; ":param" segments are accepted too). Parameter names do not have to match.
      Prints every route missing from the spec and every spec operation missing from
      FILE. Exit 1 if anything is missing in either direction.

  check_openapi.py [--spec PATH] responses FILE.jsonl
      One JSON object per line:
        {"method": "GET", "path": "/api/v1/resources/{name}", "status": 200,
         "contentType": "application/json; charset=utf-8", "body": <parsed JSON or null>}
      "path" is the route template (a concrete path is matched against the templates
      too). Each response must match a declared operation, status code and content type
      (parameters such as ";charset" ignored), and a JSON body must validate against the
      declared schema (JSON Schema 2020-12, formats asserted). A JSON content type with
      a null body is a failure (missing or unparseable). Prints one line per failing
      response and "N responses checked, M failures"; exit 1 if M > 0.

  check_openapi.py [--spec PATH] [--resource-schema PATH] lint
      Validates the document with openapi-spec-validator (if importable, else it is only
      loaded), checks Triad's own conventions (operationId + summary everywhere, a 500
      on every operation, no "default" responses, 4xx/5xx are application/problem+json
      Problem, every local $ref resolves) and that components.schemas.Resource mirrors
      schemas/resource.schema.json. Exit 1 on any error.

--spec defaults to schemas/openapi.yaml under the repository root (this script's parent
directory's parent). Exit status 2: usage error or unreadable input.
"""
import argparse
import json
import os
import re
import sys
from urllib.parse import quote

try:
    import yaml
    import jsonschema
    from jsonschema import Draft202012Validator, validators
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012
except ImportError as e:  # pragma: no cover
    sys.stderr.write(f"check_openapi.py: error: {e} (needs PyYAML and jsonschema >= 4.18)\n")
    sys.exit(2)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SPEC = os.path.join(ROOT, "schemas", "openapi.yaml")
DEFAULT_RESOURCE_SCHEMA = os.path.join(ROOT, "schemas", "resource.schema.json")
SPEC_URI = "urn:triad:openapi"  # base URI of the document in the schema registry
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
RESOURCE_REF_PREFIX = "#/components/schemas/Resource/"
MAX_ERRORS_PER_RESPONSE = 5
# Error responses that are deliberately not problem+json (docs/api.md: readiness answers
# its own JSON document with 503 so probes can read the failing checks).
NON_PROBLEM_ERRORS = {("GET", "/readyz", "503")}
MAX_MESSAGE = 300


class UsageError(Exception):
    pass


# --------------------------------------------------------------------------- loading

def load_spec(path):
    try:
        with open(path, encoding="utf-8") as f:
            spec = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"cannot load {path}: {e}")
    if not isinstance(spec, dict):
        raise UsageError(f"{path}: not a YAML mapping")
    # Unquoted status codes load as ints; the OpenAPI keys are strings.
    for _, _, op, _ in operations(spec):
        responses = op.get("responses")
        if isinstance(responses, dict):
            op["responses"] = {str(k): v for k, v in responses.items()}
    return spec


def escape(segment):
    return str(segment).replace("~", "~0").replace("/", "~1")


def pointer_of(parts):
    return "".join("/" + escape(p) for p in parts)


def resolve_pointer(doc, ref):
    """The node a local "#/..." ref names, or raise KeyError."""
    if not ref.startswith("#"):
        raise KeyError(f"not a local reference: {ref}")
    node = doc
    frag = ref[1:]
    if not frag:
        return node
    if not frag.startswith("/"):
        raise KeyError(f"not a JSON pointer: {ref}")
    for raw in frag[1:].split("/"):
        seg = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(seg)]
        elif isinstance(node, dict):
            node = node[seg]
        else:
            raise KeyError(ref)
    return node


def deref(doc, node, pointer):
    """Follow OpenAPI-level $refs (responses, parameters, ...): (node, pointer)."""
    seen = set()
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if ref in seen:
            raise KeyError(f"reference cycle at {ref}")
        seen.add(ref)
        node = resolve_pointer(doc, ref)
        pointer = ref[1:]
    return node, pointer


def operations(spec):
    """Yield (METHOD, path template, operation object, JSON pointer of the operation)."""
    for path, item in (spec.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for method in METHODS:
            op = item.get(method)
            if isinstance(op, dict):
                yield method.upper(), path, op, pointer_of(["paths", path, method])


# --------------------------------------------------------------------------- paths

PARAM = re.compile(r"\{[^/{}]*\}")


def normalize_template(path):
    path = path.split("?", 1)[0].strip()
    segs = path.split("/")
    segs = ["{}" if s.startswith(":") and len(s) > 1 else s for s in segs]
    return PARAM.sub("{}", "/".join(segs))


def template_regex(template):
    parts = PARAM.split(template)
    return re.compile("^" + "[^/]+".join(re.escape(p) for p in parts) + "$")


class OperationIndex:
    def __init__(self, spec):
        self.by_key = {}
        for method, path, op, ptr in operations(spec):
            self.by_key[(method, normalize_template(path))] = (path, op, ptr)
        # For concrete paths: literal segments first, then fewer parameters.
        self.patterns = sorted(
            ((template_regex(path), m, path, op, ptr) for (m, _), (path, op, ptr) in self.by_key.items()),
            key=lambda t: t[2].count("{"),
        )

    def find(self, method, path):
        hit = self.by_key.get((method, normalize_template(path)))
        if hit:
            return hit
        concrete = path.split("?", 1)[0]
        for rx, m, tpath, op, ptr in self.patterns:
            if m == method and rx.match(concrete):
                return tpath, op, ptr
        return None


# --------------------------------------------------------------------------- routes

def cmd_routes(spec, route_file):
    try:
        with open(route_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read {route_file}: {e}")
    served = {}
    bad = 0
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].startswith("/"):
            print(f"{route_file}:{n}: cannot parse route {line!r} (want 'METHOD /path')")
            bad += 1
            continue
        method, path = parts[0].upper(), parts[1]
        served.setdefault((method, normalize_template(path)), f"{method} {path}")
    documented = {}
    for method, path, _, _ in operations(spec):
        documented[(method, normalize_template(path))] = f"{method} {path}"

    missing_in_spec = sorted(set(served) - set(documented), key=lambda k: (k[1], k[0]))
    missing_in_server = sorted(set(documented) - set(served), key=lambda k: (k[1], k[0]))
    for k in missing_in_spec:
        print(f"missing from openapi.yaml: {served[k]}")
    for k in missing_in_server:
        print(f"missing from server: {documented[k]}")
    ok = not (missing_in_spec or missing_in_server or bad)
    print(f"{len(served)} routes registered, {len(documented)} operations documented, "
          f"{len(missing_in_spec)} missing from openapi.yaml, {len(missing_in_server)} missing from server")
    return 0 if ok else 1


# --------------------------------------------------------------------------- responses

# One rule for "pattern" in both checkers: a final "$" means end of input (ECMA-262).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_resource_schema import ecma_pattern  # noqa: E402


ResponseValidator = validators.extend(Draft202012Validator, {"pattern": ecma_pattern})


def media_type(content_type):
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def is_json(mt):
    return mt == "application/json" or mt.endswith("+json")


def find_media(content, mt):
    """(declared key, media type object) for mt in an OpenAPI content map, or None."""
    lowered = {k.lower(): k for k in content}
    for candidate in (mt, mt.split("/", 1)[0] + "/*", "*/*"):
        if candidate in lowered:
            key = lowered[candidate]
            return key, content[key]
    return None


def short(msg):
    return msg if len(msg) <= MAX_MESSAGE else msg[:MAX_MESSAGE] + "…"


class ResponseChecker:
    def __init__(self, spec):
        self.spec = spec
        self.index = OperationIndex(spec)
        self.registry = Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(spec))
        self.validators = {}

    def validator(self, schema_pointer):
        v = self.validators.get(schema_pointer)
        if v is None:
            ref = SPEC_URI + "#" + quote(schema_pointer, safe="/~:@!$&'()*+,;=-._")
            v = ResponseValidator(
                {"$ref": ref},
                registry=self.registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
            self.validators[schema_pointer] = v
        return v

    def check(self, rec):
        """A list of failure messages for one response record (empty when it conforms)."""
        if not isinstance(rec, dict):
            return ["record is not a JSON object"]
        method = str(rec.get("method", "")).upper()
        path = rec.get("path")
        status = rec.get("status")
        if not method or not isinstance(path, str) or not isinstance(status, int):
            return ["record needs string method and path and integer status"]
        hit = self.index.find(method, path)
        if hit is None:
            return [f"no operation {method} {path} in openapi.yaml"]
        _, op, op_ptr = hit
        responses = op.get("responses") or {}
        code = str(status)
        key = next((k for k in (code, code[0] + "XX", "default") if k in responses), None)
        if key is None:
            return [f"status {status} not declared (declared: {', '.join(sorted(responses))})"]
        try:
            response, resp_ptr = deref(self.spec, responses[key], op_ptr + pointer_of(["responses", key]))
        except (KeyError, IndexError, ValueError) as e:
            return [f"cannot resolve response {key}: {e}"]
        if not isinstance(response, dict):
            return [f"response {key} is not an object in openapi.yaml"]
        content = response.get("content") or {}
        mt = media_type(rec.get("contentType"))
        if not content:
            return [f"status {status} declares no content but got {mt!r}"] if mt else []
        if not mt:
            return [f"no Content-Type; declared: {', '.join(content)}"]
        found = find_media(content, mt)
        if found is None:
            return [f"content type {mt!r} not declared for {status} (declared: {', '.join(content)})"]
        declared, media = found
        if not is_json(mt):
            return []
        body = rec.get("body")
        if body is None:
            return [f"{mt} response without a JSON body (missing or unparseable)"]
        if "schema" not in media:
            return []
        schema_ptr = resp_ptr + pointer_of(["content", declared, "schema"])
        try:
            errors = sorted(
                self.validator(schema_ptr).iter_errors(body),
                key=lambda e: (list(map(str, e.absolute_path)), e.message),
            )
        except Unresolvable as e:
            return [f"schema reference cannot be resolved: {e}"]
        out = [f"{pointer_of(e.absolute_path) or '/'}: {short(e.message)}" for e in errors]
        if len(out) > MAX_ERRORS_PER_RESPONSE:
            extra = len(out) - MAX_ERRORS_PER_RESPONSE
            out = out[:MAX_ERRORS_PER_RESPONSE] + [f"(+{extra} more)"]
        return out


def cmd_responses(spec, jsonl):
    try:
        with open(jsonl, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read {jsonl}: {e}")
    checker = ResponseChecker(spec)
    checked = failures = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        checked += 1
        try:
            rec = json.loads(line)
        except ValueError as e:
            problems, label = [f"not JSON: {e}"], "?"
        else:
            problems = checker.check(rec)
            label = (f"{str(rec.get('method', '?')).upper()} {rec.get('path', '?')} {rec.get('status', '?')}"
                     if isinstance(rec, dict) else "?")
        if problems:
            failures += 1
            print(f"{jsonl}:{n}: {label}: " + "; ".join(problems))
    print(f"{checked} responses checked, {failures} failures")
    return 1 if failures else 0


# --------------------------------------------------------------------------- lint

def walk_refs(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield path, v
            else:
                yield from walk_refs(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_refs(v, path + (i,))


def unmirror(node, prefix=RESOURCE_REF_PREFIX):
    """components.schemas.<Name> -> the form of its schema file (refs as "#/$defs/...")."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith(prefix):
                out[k] = "#/" + v[len(prefix):]
            else:
                out[k] = unmirror(v, prefix)
        return out
    if isinstance(node, list):
        return [unmirror(v, prefix) for v in node]
    return node


def differences(a, b, path=()):
    """JSON pointers where a and b differ (type-strict: 1 != 1.0 != True)."""
    if type(a) is not type(b):
        yield pointer_of(path) or "/"
    elif isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                yield (pointer_of(path + (k,))) + (" (only in openapi.yaml)" if k in a else " (only in resource.schema.json)")
            else:
                yield from differences(a[k], b[k], path + (k,))
    elif isinstance(a, list):
        if len(a) != len(b):
            yield (pointer_of(path) or "/") + f" (length {len(a)} vs {len(b)})"
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                yield from differences(x, y, path + (i,))
    elif a != b:
        yield pointer_of(path) or "/"


def lint_mirror(spec, resource_schema_path, name="Resource"):
    errors = []
    try:
        with open(resource_schema_path, encoding="utf-8") as f:
            original = json.load(f)
    except (OSError, ValueError) as e:
        return [f"cannot read {resource_schema_path}: {e}"]
    mirror = ((spec.get("components") or {}).get("schemas") or {}).get(name)
    if not isinstance(mirror, dict):
        return [f"components.schemas.{name} is missing"]
    for k in ("$schema", "$id"):
        if k in mirror:
            errors.append(f"components.schemas.{name} must not carry {k} (see the header comment)")
    expected = {k: v for k, v in original.items() if k not in ("$schema", "$id")}
    actual = {k: v for k, v in mirror.items() if k not in ("$schema", "$id")}
    diffs = list(differences(unmirror(actual, f"#/components/schemas/{name}/"), expected))
    for d in diffs[:20]:
        errors.append(f"components.schemas.{name} differs from {os.path.basename(resource_schema_path)} at {d}")
    if len(diffs) > 20:
        errors.append(f"(+{len(diffs) - 20} more differences)")
    return errors


def lint_conventions(spec):
    errors = []
    seen_ids = {}
    for method, path, op, ptr in operations(spec):
        where = f"{method} {path}"
        op_id = op.get("operationId")
        if not op_id:
            errors.append(f"{where}: no operationId")
        elif op_id in seen_ids:
            errors.append(f"{where}: operationId {op_id!r} also used by {seen_ids[op_id]}")
        else:
            seen_ids[op_id] = where
        if not op.get("summary"):
            errors.append(f"{where}: no summary")
        responses = op.get("responses") or {}
        if "default" in responses:
            errors.append(f"{where}: 'default' response (list status codes explicitly)")
        if "500" not in responses:
            errors.append(f"{where}: no 500 response")
        for code, resp in responses.items():
            try:
                resp, _ = deref(spec, resp, ptr)
            except (KeyError, IndexError, ValueError) as e:
                errors.append(f"{where} {code}: cannot resolve response: {e}")
                continue
            if not isinstance(resp, dict):
                errors.append(f"{where} {code}: response is not an object")
                continue
            content = resp.get("content") or {}
            if not content:
                errors.append(f"{where} {code}: no content declared")
            for mt, media in content.items():
                if "schema" not in (media or {}):
                    errors.append(f"{where} {code} {mt}: no schema")
            if code[:1] in ("4", "5") and (method, path, code) not in NON_PROBLEM_ERRORS:
                if list(content) != ["application/problem+json"]:
                    errors.append(f"{where} {code}: error content must be exactly application/problem+json")
                elif (content["application/problem+json"].get("schema") or {}).get("$ref") != "#/components/schemas/Problem":
                    errors.append(f"{where} {code}: error schema must be #/components/schemas/Problem")
    for path, ref in walk_refs(spec):
        if not ref.startswith("#"):
            errors.append(f"{pointer_of(path)}: non-local $ref {ref!r}")
            continue
        try:
            resolve_pointer(spec, ref)
        except (KeyError, IndexError, ValueError):
            errors.append(f"{pointer_of(path)}: $ref {ref!r} does not resolve")
    # Every component schema must itself be a valid 2020-12 schema.
    for name, schema in ((spec.get("components") or {}).get("schemas") or {}).items():
        try:
            Draft202012Validator.check_schema(schema)
        except jsonschema.exceptions.SchemaError as e:
            errors.append(f"components.schemas.{name}: invalid JSON Schema: {short(e.message)}")
    return errors


def cmd_lint(spec, spec_path, resource_schema_path):
    errors = []
    validator_name = "not installed; document only loaded"
    try:
        from openapi_spec_validator import OpenAPIV31SpecValidator
    except ImportError:
        OpenAPIV31SpecValidator = None
    if OpenAPIV31SpecValidator is not None:
        try:
            from importlib.metadata import version
            validator_name = "openapi-spec-validator " + version("openapi-spec-validator")
        except Exception:  # noqa: BLE001 - the version is only informative
            validator_name = "openapi-spec-validator"
        if spec.get("openapi") != "3.1.0":
            errors.append(f"openapi: expected 3.1.0, got {spec.get('openapi')!r}")
        try:
            base = "file://" + os.path.abspath(spec_path)
            for e in OpenAPIV31SpecValidator(spec, base_uri=base).iter_errors():
                where = pointer_of(getattr(e, "absolute_path", []) or [])
                errors.append(f"openapi-spec-validator: {where or '/'}: {short(str(e.message))}")
        except Exception as e:  # noqa: BLE001 - resolver failures surface as arbitrary exceptions
            errors.append(f"openapi-spec-validator: {type(e).__name__}: {short(str(e))}")
    errors += lint_conventions(spec)
    errors += lint_mirror(spec, resource_schema_path)
    errors += lint_mirror(spec, os.path.join(os.path.dirname(resource_schema_path), "project.schema.json"), "Project")
    for e in errors:
        print(e)
    n_ops = sum(1 for _ in operations(spec))
    if errors:
        print(f"{spec_path}: {len(errors)} errors ({validator_name})")
        return 1
    print(f"{spec_path}: OK — {n_ops} operations ({validator_name}); "
          f"components.schemas.Resource mirrors {os.path.basename(resource_schema_path)}, Project project.schema.json")
    return 0


# --------------------------------------------------------------------------- main

def main(argv=None):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--spec", default=argparse.SUPPRESS,
                        help=f"the OpenAPI document (default: {os.path.relpath(DEFAULT_SPEC, ROOT)} in the repo)")
    parser = argparse.ArgumentParser(
        prog="check_openapi.py", parents=[common],
        description="Check routes and responses against schemas/openapi.yaml, or lint it.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("routes", parents=[common], help="compare registered routes with the spec")
    p.add_argument("file")
    p = sub.add_parser("responses", parents=[common], help="validate recorded responses (JSON lines)")
    p.add_argument("file")
    p = sub.add_parser("lint", parents=[common], help="validate the document itself")
    p.add_argument("--resource-schema", default=DEFAULT_RESOURCE_SCHEMA,
                   help="the schema components.schemas.Resource mirrors "
                        f"(default: {os.path.relpath(DEFAULT_RESOURCE_SCHEMA, ROOT)})")
    args = parser.parse_args(argv)
    spec_path = getattr(args, "spec", DEFAULT_SPEC)
    try:
        if args.cmd == "lint":
            try:
                spec = load_spec(spec_path)
            except UsageError as e:
                print(e)
                return 1
            return cmd_lint(spec, spec_path, args.resource_schema)
        spec = load_spec(spec_path)
        if args.cmd == "routes":
            return cmd_routes(spec, args.file)
        return cmd_responses(spec, args.file)
    except UsageError as e:
        sys.stderr.write(f"check_openapi.py: error: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
