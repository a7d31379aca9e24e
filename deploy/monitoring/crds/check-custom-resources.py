"""Validates custom resources against the CRDs in this directory, strictly.

    python check-custom-resources.py FILE...

Every document of every FILE whose apiVersion and kind one of the CRDs here
defines is validated against that version's openAPIV3Schema, with every
object schema that lists properties closed (additionalProperties: false)
unless it says x-kubernetes-preserve-unknown-fields: the strict mode of
`kubectl apply --validate=strict`. Other documents are left alone and listed
as such. Exit status 1 when any document is invalid.
"""

import copy
import pathlib
import sys

import jsonschema
import yaml

HERE = pathlib.Path(__file__).parent


def strict(schema):
    """A copy of an OpenAPI v3 structural schema that refuses unknown fields."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


def schemas():
    """(apiVersion, kind) -> strict JSON schema, from every CRD here."""
    found = {}
    for path in sorted(HERE.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                found[(f"{group}/{version['name']}", kind)] = schema
    return found


def main(files):
    known = schemas()
    failed = False
    for name in files:
        for doc in yaml.safe_load_all(pathlib.Path(name).read_text()):
            if not doc:
                continue
            key = (doc.get("apiVersion"), doc.get("kind"))
            what = f"{name}: {key[1]} {doc.get('metadata', {}).get('name')}"
            if key not in known:
                continue
            errors = sorted(
                jsonschema.Draft7Validator(known[key]).iter_errors(doc),
                key=lambda e: list(e.absolute_path),
            )
            for error in errors:
                path = "/".join(str(p) for p in error.absolute_path)
                print(f"INVALID {what}: {path}: {error.message}")
                failed = True
            if not errors:
                print(f"valid   {what} (CRD schema, strict)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
