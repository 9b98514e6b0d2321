#!/usr/bin/env python3
"""Renders the chart with the real Helm engine (helm-python-sdk) and validates every object.

usage: render.py VALUES_JSON
Prints the rendered objects as a JSON list on stdout; exits 1 with the engine's message when the
chart refuses the values (schema or template failure) and 2 when an object is not valid
Kubernetes (kubernetes-validate, strict, against the version in KUBE_VERSION or 1.30.0).
"""
import json
import os
import sys

import helm_python as helm
import kubernetes_validate
import yaml

chart_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
values = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
kube = os.environ.get("KUBE_VERSION", "1.30.0")

chart = helm.Chart.load(chart_dir)
try:
    chart.validate_schema(chart.merge_values(values))
    rendered = chart.render(values, name="berth", namespace="registry", is_install=True)
except Exception as e:  # the engine's own error, naming the key or template
    print(str(e), file=sys.stderr)
    sys.exit(1)

report = helm.lint(chart_dir, values, strict=True, kube_version="v" + kube)
errors = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
if errors:
    print("lint: " + json.dumps(errors), file=sys.stderr)
    sys.exit(1)

objects = []
for path, text in sorted(rendered.items()):
    if not path.endswith((".yaml", ".yml")):
        continue
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            # A CRD kind: not in the Kubernetes schemas; checked for shape by the test.
            objects.append(doc)
            continue
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.ValidationError as e:
            print(f"{path}: {doc.get('kind')}: {e.message}", file=sys.stderr)
            sys.exit(2)
        objects.append(doc)
json.dump(objects, sys.stdout)
