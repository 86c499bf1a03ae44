#!/usr/bin/env python3
"""Validates dashboards against the JSON Schema generated from @grafana/schema (see grafana-types.ts).

Usage: validate.py SCHEMA.json DASHBOARD.json...   (needs the `jsonschema` package; the ship tier runs it in its
venv). Checks the whole dashboard against GrafanaDashboard, then each panel's `options` and
`fieldConfig.defaults.custom` against the definitions for its panel type, which the dashboard model leaves open.
Prints every violation with its JSON path; exits 1 if there is any.

Deliberate deviations: none at the moment. The generated schema is stricter than Grafana (no nulls, no unknown
keys), so the dashboards avoid both.
"""

import json
import sys

import jsonschema

# Panel type → (definition for `options`, definition for `fieldConfig.defaults.custom` or None).
PANEL_TYPES = {
    "timeseries": ("TimeseriesOptions", "TimeseriesFieldConfig"),
    "heatmap": ("HeatmapOptions", "HeatmapFieldConfig"),
    "stat": ("StatOptions", None),
    "table": ("TableOptions", "TableFieldConfig"),
    "bargauge": ("BargaugeOptions", None),
}


def validator(schema, definition):
    return jsonschema.Draft7Validator({"$ref": f"#/definitions/{definition}", "definitions": schema["definitions"]})


def path(parts):
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts) or "."


def violations(schema, dashboard):
    for e in validator(schema, "GrafanaDashboard").iter_errors(dashboard):
        yield path(e.absolute_path), e.message
    for i, panel in enumerate(dashboard.get("panels", [])):
        kind = panel.get("type")
        if kind == "row":
            continue
        if kind not in PANEL_TYPES:
            yield f".panels[{i}].type", f"panel type {kind!r} has no schema here; add it to grafana-types.ts"
            continue
        options_def, custom_def = PANEL_TYPES[kind]
        parts = [(options_def, panel.get("options", {}), f".panels[{i}].options")]
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None:
            if custom_def is None:
                yield f".panels[{i}].fieldConfig.defaults.custom", f"{kind} panels have no custom field config"
            else:
                parts.append((custom_def, custom, f".panels[{i}].fieldConfig.defaults.custom"))
        for definition, value, at in parts:
            for e in validator(schema, definition).iter_errors(value):
                yield at + path(e.absolute_path), e.message


def main(argv):
    schema = json.load(open(argv[0]))
    bad = 0
    for name in argv[1:]:
        found = list(violations(schema, json.load(open(name))))
        for at, message in found:
            print(f"{name}: {at}: {message}")
        print(f"{name}: {'OK' if not found else f'{len(found)} violation(s)'}")
        bad += len(found)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
