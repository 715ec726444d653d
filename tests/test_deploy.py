"""The container image and the Kubernetes manifests in deploy/: each manifest
checked against the Kubernetes API's own models (the ``kubernetes`` client), and
all of them against the server they run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="needs the dev extra: pip install -e '.[dev]'")
kubernetes = pytest.importorskip("kubernetes", reason="needs the dev extra")

from serve.__main__ import server_parser  # noqa: E402
from serve.metrics import Metrics  # noqa: E402

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
MODELS = {("apps/v1", "Deployment"): "V1Deployment", ("v1", "Service"): "V1Service",
          ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler"}


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "k8s" / name).read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("name", ["deployment.yaml", "service.yaml", "hpa.yaml"])
def test_each_manifest_is_a_valid_object_of_its_kind(name: str) -> None:
    """Read through the API's model of its kind (required fields checked) and
    written back: a misspelt or misplaced field would not survive the trip."""
    doc = load(name)
    model = MODELS[(doc["apiVersion"], doc["kind"])]
    client = kubernetes.client.ApiClient()
    obj = client.deserialize(json.dumps(doc), model, "application/json")
    back = _drop_empty(client.sanitize_for_serialization(obj))
    assert back == json.loads(json.dumps(doc))


def _container() -> dict[str, Any]:
    containers = load("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _entrypoint() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    match = re.search(r"^ENTRYPOINT (\[.*?\])\s*$", text.replace("\\\n", ""), re.M | re.S)
    assert match, "the Dockerfile has no exec-form ENTRYPOINT"
    return list(json.loads(match.group(1)))


def test_the_image_runs_the_server_with_the_deployments_arguments() -> None:
    entry, args = _entrypoint(), _container()["args"]
    assert entry[:3] == ["python", "-m", "serve"]
    parsed = server_parser().parse_args(entry[3:] + args)  # every flag the server knows
    port = _container()["ports"][0]["containerPort"]
    assert parsed.port == port
    assert f"EXPOSE {port}" in (DEPLOY / "Dockerfile").read_text()
    assert parsed.host == "0.0.0.0"
    assert parsed.max_batch >= parsed.max_sessions  # one model call steps every dream


def test_probes_hook_and_grace_fit_the_server() -> None:
    spec = load("deployment.yaml")["spec"]["template"]["spec"]
    c = _container()
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"  # 503 when full or draining
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    parsed = server_parser().parse_args(_entrypoint()[3:] + c["args"])
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] > int(pre_stop[1]) + parsed.drain_grace + 5


def test_service_and_autoscaler_point_at_the_deployment_and_its_gauge() -> None:
    deployment, service, hpa = load("deployment.yaml"), load("service.yaml"), load("hpa.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == _container()["ports"][0]["name"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert f"\n{metric} " in Metrics(sessions=3).render()  # the gauge the server exports
    sessions = server_parser().parse_args(_entrypoint()[3:] + _container()["args"]).max_sessions
    assert 0 < int(hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"]) < sessions
