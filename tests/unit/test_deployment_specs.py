"""prefect.yaml and `emailsync serve` cannot drift: both follow `emailsync.deployment_specs`."""

from __future__ import annotations

from pathlib import Path

import yaml

from emailsync.deployment_specs import DEPLOYMENTS, EMAIL_SYNC_DEPLOYMENT

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def yaml_deployments() -> dict[str, dict]:
    document = yaml.safe_load(PREFECT_YAML.read_text())
    return {deployment["name"]: deployment for deployment in document["deployments"]}


def test_prefect_yaml_holds_exactly_the_defined_deployments():
    assert set(yaml_deployments()) == {spec.name for spec in DEPLOYMENTS}


def test_every_deployment_in_prefect_yaml_matches_its_definition():
    deployed = yaml_deployments()
    for spec in DEPLOYMENTS:
        entry = deployed[spec.name]
        assert entry["entrypoint"] == spec.entrypoint, spec.name
        assert tuple(entry["tags"]) == spec.tags, spec.name
        assert (entry.get("parameters") or {}) == spec.parameters, spec.name
        assert " ".join(entry["description"].split()) == spec.description, spec.name
        assert str(entry["version"]) == spec.version, spec.name
        assert entry.get("concurrency_limit") == spec.concurrency_limit, spec.name
        crons = [schedule["cron"] for schedule in entry.get("schedules") or []]
        assert crons == ([spec.cron] if spec.cron else []), spec.name


def test_the_entrypoints_name_the_flows_they_point_at():
    import importlib

    for spec in DEPLOYMENTS:
        module_path, function = spec.entrypoint.split(":")
        flow = getattr(importlib.import_module(module_path.removesuffix(".py").replace("/", ".")), function)
        assert flow.name == spec.flow_name
    assert EMAIL_SYNC_DEPLOYMENT == "email-sync/email-sync"


def test_flows_never_import_deployments():
    import ast

    for path in (PREFECT_YAML.parent / "flows").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(name.split(".")[0] == "deployments" for name in names), path.name
