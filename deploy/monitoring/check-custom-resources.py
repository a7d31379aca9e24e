"""Validates tollgate's prometheus-operator custom resources, strictly.

    python check-custom-resources.py FILE...

The Kubernetes validator knows only built-in kinds. This script checks the
two custom kinds deploy/ ships -- `ServiceMonitor` and `PrometheusRule`
(monitoring.coreos.com/v1) -- against schemas written here for the subset of
their fields tollgate uses, with every object closed (a field not listed is
an error, as `kubectl apply --validate=strict` would refuse a misspelt one).
A field the operator supports but tollgate does not use yet must be added
here before a manifest may use it. Other documents are left alone. Exit
status 1 when any document is invalid.
"""

import pathlib
import sys

import jsonschema
import yaml


def obj(properties, required=()):
    """A closed object schema."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


STRING = {"type": "string"}
STRING_MAP = {"type": "object", "additionalProperties": STRING}
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
METADATA = obj(
    {"name": STRING, "namespace": STRING, "labels": STRING_MAP, "annotations": STRING_MAP},
    required=["name"],
)
LABEL_SELECTOR = obj(
    {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": obj(
                {"key": STRING, "operator": STRING, "values": {"type": "array", "items": STRING}},
                required=["key", "operator"],
            ),
        },
    }
)
SERVICE_MONITOR = obj(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": obj(
            {
                "jobLabel": STRING,
                "selector": LABEL_SELECTOR,
                "namespaceSelector": obj(
                    {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": STRING}}
                ),
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": obj(
                        {
                            "port": STRING,
                            "path": STRING,
                            "scheme": {"enum": ["http", "https"]},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "honorLabels": {"type": "boolean"},
                        }
                    ),
                },
            },
            required=["selector", "endpoints"],
        ),
    },
    required=["apiVersion", "kind", "metadata", "spec"],
)
RULE = {
    "oneOf": [
        obj({"record": STRING, "expr": STRING, "labels": STRING_MAP}, required=["record", "expr"]),
        obj(
            {"alert": STRING, "expr": STRING, "for": DURATION, "keep_firing_for": DURATION,
             "labels": STRING_MAP, "annotations": STRING_MAP},
            required=["alert", "expr"],
        ),
    ]
}
PROMETHEUS_RULE = obj(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": obj(
            {
                "groups": {
                    "type": "array",
                    "items": obj(
                        {"name": STRING, "interval": DURATION, "rules": {"type": "array", "items": RULE}},
                        required=["name", "rules"],
                    ),
                }
            },
            required=["groups"],
        ),
    },
    required=["apiVersion", "kind", "metadata", "spec"],
)
SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
}


def main(files):
    failed = False
    for name in files:
        for doc in yaml.safe_load_all(pathlib.Path(name).read_text()):
            if not doc:
                continue
            key = (doc.get("apiVersion"), doc.get("kind"))
            what = f"{name}: {key[1]} {doc.get('metadata', {}).get('name')}"
            if key[1] in ("ServiceMonitor", "PrometheusRule") and key not in SCHEMAS:
                print(f"INVALID {what}: apiVersion {key[0]} is not monitoring.coreos.com/v1")
                failed = True
                continue
            if key not in SCHEMAS:
                continue
            errors = sorted(
                jsonschema.Draft7Validator(SCHEMAS[key]).iter_errors(doc),
                key=lambda e: list(e.absolute_path),
            )
            for error in errors:
                path = "/".join(str(p) for p in error.absolute_path)
                print(f"INVALID {what}: {path}: {error.message}")
                failed = True
            if not errors:
                print(f"valid   {what} (strict)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
