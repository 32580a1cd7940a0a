"""Checks of the classification settings, shared by the config and the engine."""

from __future__ import annotations

from typing import Any

from zs_ray.errors import ZsRayError

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8", "onnx-int8")


def parse_labels(value: Any) -> tuple[str, ...]:
    """Candidate labels as the transformers pipeline takes them: a comma-separated
    string (split and stripped) or a sequence of strings."""
    if isinstance(value, str):
        value = value.split(",")
    labels = tuple(str(label).strip() for label in value)
    if not labels or any(not label for label in labels):
        raise ZsRayError("--labels needs at least one non-empty label (comma-separated)")
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise ZsRayError(f"--labels has duplicate labels: {', '.join(dupes)}")
    return labels


def parse_label_map(value: Any) -> dict:
    """``--label-map``: a mapping, JSON text, or a YAML/JSON file of model class -> candidate label."""
    where = value
    if isinstance(value, str):
        if value.lstrip().startswith("{"):
            import json

            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ZsRayError(f"--label-map is neither a file nor valid JSON: {exc}") from None
        else:
            value = load_yaml(value, "--label-map")
    if not isinstance(value, dict) or not value or any(v is None or not str(v).strip() for v in value.values()):
        raise ZsRayError(f"--label-map {where} must map the model's classes to non-empty candidate labels")
    return {str(k): str(v).strip() for k, v in value.items()}


def check_template(template: str) -> str:
    if "{}" not in template:
        raise ZsRayError(f"--hypothesis-template must contain '{{}}' where the label goes: {template!r}")
    try:
        template.format("x")
    except (IndexError, KeyError, ValueError) as exc:
        raise ZsRayError(f"--hypothesis-template is not a valid format string ({exc}): {template!r}") from None
    return template


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ZsRayError(f"unknown --precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


def load_yaml(path: str, flag: str):
    """The YAML document of ``path`` (a file named by ``flag``), or a one-line error."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        raise ZsRayError(f"cannot read {flag} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ZsRayError(f"{flag} {path} is not valid YAML: {str(exc).strip().splitlines()[0]}") from None
