"""deploy/: the RayService manifest validates against KubeRay's CRD and names the app's import path."""
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT.parent / "shared" / "schemas" / "kuberay" / "ray.io_rayservices.yaml"


def _strip_k8s_extensions(node):
    """OpenAPI v3 -> JSON Schema: drop Kubernetes-only keys jsonschema does not know."""
    if isinstance(node, dict):
        return {k: _strip_k8s_extensions(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if isinstance(node, list):
        return [_strip_k8s_extensions(v) for v in node]
    return node


@pytest.fixture(scope="module")
def rayservice_schema():
    if not CRD.exists():
        pytest.skip(f"KubeRay CRD not found at {CRD}")
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return _strip_k8s_extensions(version["schema"]["openAPIV3Schema"])


def test_rayservice_manifest_is_valid(rayservice_schema):
    manifest = yaml.safe_load((ROOT / "deploy" / "rayservice.yaml").read_text())
    jsonschema.validate(manifest, rayservice_schema)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")


def test_the_schema_catches_a_broken_manifest(rayservice_schema):
    manifest = yaml.safe_load((ROOT / "deploy" / "rayservice.yaml").read_text())
    manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, rayservice_schema)


def test_manifest_and_serve_config_name_the_same_app():
    manifest = yaml.safe_load((ROOT / "deploy" / "rayservice.yaml").read_text())
    in_cluster = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    local = yaml.safe_load((ROOT / "deploy" / "serve_config.yaml").read_text())
    paths = {app["import_path"] for cfg in (in_cluster, local) for app in cfg["applications"]}
    assert paths == {"serve.app:build_app"}
    worker = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert in_cluster["applications"][0]["args"]["num_gpus_per_replica"] == 1


def test_both_deploy_configs_build_the_app():
    from ray.serve import Application

    from serve.http.app import build_app

    manifest = yaml.safe_load((ROOT / "deploy" / "rayservice.yaml").read_text())
    configs = [yaml.safe_load(manifest["spec"]["serveConfigV2"]),
               yaml.safe_load((ROOT / "deploy" / "serve_config.yaml").read_text())]
    for config in configs:
        app = build_app(config["applications"][0]["args"])
        assert isinstance(app, Application)


def test_bad_args_are_refused_by_name():
    from pydantic import ValidationError

    from serve.http.app import build_app

    with pytest.raises(ValidationError, match="max_slotz"):
        build_app({"engine": {"max_slotz": 3}})
    with pytest.raises(ValidationError, match="max_replicas"):
        build_app({"replicas": 4, "max_replicas": 2})
