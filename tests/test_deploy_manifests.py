"""Checks cluster_configs/ and k8s/ against the schemas and models that real clusters enforce."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.utils import parse_quantity

from tests.ports import free_ports

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CRD_DIR = SHARED / "data" / "kuberay_crds"
K8S = REPO / "k8s"
CLUSTER_CONFIGS = REPO / "cluster_configs"
IMAGE_SCRIPT_DIR = "/home/ray/vcn/"  # WORKDIR of k8s/Dockerfile: the repo's files sit under it
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 3 MB of YAML

needs_crds = pytest.mark.skipif(
    not CRD_DIR.is_dir(), reason=f"KubeRay CRDs not found at {CRD_DIR} (the shared data sits beside the repo)"
)


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.load_all(path.read_text(), Loader=YAML_LOADER) if d is not None]


def load_doc(path: Path) -> dict:
    (doc,) = load_docs(path)
    return doc


@functools.cache
def ray_pin() -> str:
    """The Ray version pyproject.toml pins: images, rayVersion and cluster configs must all match it."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray_dep,) = [d for d in deps if d.startswith("ray[")]
    return ray_dep.split("==")[1]


# ---------------------------------------------------------------------------------------------
# Ray cluster launcher configs: Ray's own ray-schema.json, Ray's own config preparation, botocore
# ---------------------------------------------------------------------------------------------


@functools.cache
def ray_cluster_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def cluster_config_errors(config: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(ray_cluster_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)]


@pytest.mark.parametrize("name", ["aws.yaml", "local.yaml"])
def test_cluster_config_matches_ray_schema(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load_doc(CLUSTER_CONFIGS / name)
    assert cluster_config_errors(config) == []
    # What `ray up` does before launching anything: fill defaults, merge node types, validate again.
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_ray_schema_rejects_a_misspelled_field():
    config = load_doc(CLUSTER_CONFIGS / "aws.yaml")
    config["idle_timeout_minute"] = 5
    config["available_node_types"]["ray.worker.gpu"]["min_worker"] = 0
    errors = cluster_config_errors(config)
    assert any("idle_timeout_minute" in e for e in errors)
    assert any("min_worker" in e for e in errors)


def test_aws_config_shape():
    config = load_doc(CLUSTER_CONFIGS / "aws.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "the head must take no tasks"
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    cpu = [t for t in workers.values() if t["resources"].get("GPU", 0) == 0 and t["resources"].get("CPU", 0) > 0]
    assert gpu and cpu, "need a GPU worker type and a CPU worker type"
    assert gpu[0]["node_config"]["InstanceType"].split(".")[0] in {"g5", "g6", "g6e"}
    for t in workers.values():
        assert t["min_workers"] == 0 and t["max_workers"] >= 1
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]


def test_aws_node_configs_are_valid_run_instances_requests():
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape

    def report(node_config: dict) -> str:
        # What Ray's AWS node provider adds before calling ec2.create_instances(**conf).
        params = {**node_config, "MinCount": 1, "MaxCount": 1, "SubnetId": "subnet-0", "KeyName": "ray"}
        return ParamValidator().validate(params, shape).generate_report()

    config = load_doc(CLUSTER_CONFIGS / "aws.yaml")
    for name, node_type in config["available_node_types"].items():
        assert report(node_type["node_config"]) == "", name
    bad = {**config["available_node_types"]["ray.worker.gpu"]["node_config"], "InstanceTyp": "g5.xlarge"}
    assert "InstanceTyp" in report(bad)


@pytest.mark.parametrize("name", ["aws.yaml", "local.yaml"])
def test_cluster_configs_install_vcn_and_use_token_auth(name):
    config = load_doc(CLUSTER_CONFIGS / name)
    assert config["file_mounts"]["~/vcn"] == ".", "the checkout is rsynced to ~/vcn"
    assert any("pip install" in c and "~/vcn" in c for c in config["setup_commands"])
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    images = [v for k, v in config.get("docker", {}).items() if k.endswith("image")]
    images += [t["docker"]["worker_image"] for t in config.get("available_node_types", {}).values() if "docker" in t]
    for image in images:
        assert image.startswith(f"rayproject/ray:{ray_pin()}-py311"), image


# ---------------------------------------------------------------------------------------------
# KubeRay objects: the v1.7.0 CRDs' OpenAPI schemas as structural JSON Schema
# ---------------------------------------------------------------------------------------------

# Python versions of every CEL rule (x-kubernetes-validations) in the v1.7.0 CRDs. `self == oldSelf`
# guards updates only; a manifest is a create, which has no oldSelf. An unknown rule fails validation,
# so a CRD upgrade that adds rules cannot pass unchecked.
CEL_RULES = {
    "self == oldSelf": lambda value: True,
    "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']": lambda value: value
    in ("ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"),
    "!(has(self.jobStatus) && has(self.jobDeploymentStatus))": lambda value: not (
        "jobStatus" in value and "jobDeploymentStatus" in value
    ),
    "has(self.jobStatus) || has(self.jobDeploymentStatus)": lambda value: "jobStatus" in value
    or "jobDeploymentStatus" in value,
    "!((has(self.onSuccess) || has(self.onFailure)) && has(self.deletionRules))": lambda value: not (
        ("onSuccess" in value or "onFailure" in value) and "deletionRules" in value
    ),
    "((has(self.onSuccess) && has(self.onFailure)) || has(self.deletionRules))": lambda value: (
        "onSuccess" in value and "onFailure" in value
    )
    or "deletionRules" in value,
}


def structural_to_json_schema(node: dict) -> dict:
    """Turn one node of a CRD's OpenAPI v3 schema into JSON Schema with the API server's semantics.

    - Structural schemas prune unknown fields (rejected outright with kubectl's strict field
      validation): every object that lists `properties` gets `additionalProperties: false`, unless it
      carries x-kubernetes-preserve-unknown-fields.
    - x-kubernetes-int-or-string accepts an integer or a string (a `pattern` then applies to strings).
    - `nullable: true` also accepts null.
    The list-type and CEL extensions stay as keywords that CrdValidator checks.
    """
    out: dict = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: structural_to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = structural_to_json_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [structural_to_json_schema(sub) for sub in value]
        elif key in ("nullable", "description", "x-kubernetes-int-or-string"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _list_type(validator, list_type, instance, schema):
    if not isinstance(instance, list):
        return
    if list_type == "set":
        seen = [json.dumps(item, sort_keys=True) for item in instance]
        if len(seen) != len(set(seen)):
            yield jsonschema.ValidationError(f"x-kubernetes-list-type set has duplicate items: {instance}")
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        # The API server applies defaults first (a port's protocol is TCP unless given).
        defaults = {k: schema.get("items", {}).get("properties", {}).get(k, {}).get("default") for k in keys}
        tuples = [tuple(item.get(k, defaults[k]) for k in keys) for item in instance if isinstance(item, dict)]
        if len(tuples) != len(set(tuples)):
            yield jsonschema.ValidationError(f"x-kubernetes-list-type map has duplicate keys {keys}: {tuples}")


def _cel_validations(validator, rules, instance, schema):
    for rule in rules:
        check = CEL_RULES.get(rule["rule"])
        if check is None:
            yield jsonschema.ValidationError(f"CEL rule not evaluated here, add it to CEL_RULES: {rule['rule']}")
        elif not check(instance):
            yield jsonschema.ValidationError(f"CEL rule failed: {rule.get('message', rule['rule'])}")


CrdJsonSchemaValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    {"x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel_validations},
)

FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("int32")
def _is_int32(value) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _is_int64(value) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@functools.cache
def crd_validator(kind: str, version: str = "v1"):
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=YAML_LOADER)
        if crd.get("kind") != "CustomResourceDefinition" or crd["spec"]["names"]["kind"] != kind:
            continue
        (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
        assert served["served"], f"{kind} {version} is not served"
        schema = structural_to_json_schema(served["schema"]["openAPIV3Schema"])
        return CrdJsonSchemaValidator(schema, format_checker=FORMATS), crd["spec"]["group"]
    raise AssertionError(f"no CRD for kind {kind} in {CRD_DIR}")


def crd_errors(obj: dict) -> list[str]:
    """Everything the API server would refuse in this custom object (schema, CEL, metadata)."""
    group_version, kind = obj["apiVersion"], obj["kind"]
    group, _, version = group_version.partition("/")
    validator, crd_group = crd_validator(kind, version)
    errors = [f"apiVersion group {group!r} is not the CRD's {crd_group!r}"] if group != crd_group else []
    errors += [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]
    # The CRD leaves metadata as a bare object: the API server checks it as ObjectMeta.
    try:
        k8s.V1ObjectMeta.model_validate(obj.get("metadata", {}))
    except Exception as e:  # pydantic.ValidationError
        errors.append(f"metadata: {e}")
    return errors


def kuberay_objects() -> list[tuple[str, dict]]:
    """Every KubeRay object we ship, including the RayJob inside cronjob.yaml's ConfigMap."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for i, doc in enumerate(load_docs(path)):
            if doc["apiVersion"].startswith("ray.io/"):
                found.append((f"{path.name}#{i}", doc))
            if doc["kind"] == "ConfigMap":
                for key, text in doc.get("data", {}).items():
                    for j, inner in enumerate(d for d in yaml.safe_load_all(text) if d):
                        if inner["apiVersion"].startswith("ray.io/"):
                            found.append((f"{path.name}#{i}:{key}#{j}", inner))
    return found


def test_every_kuberay_kind_is_shipped():
    kinds = sorted({obj["kind"] for _, obj in kuberay_objects()})
    assert kinds == ["RayCluster", "RayCronJob", "RayJob"]
    assert any(":rayjob.yaml" in where for where, _ in kuberay_objects()), "the CronJob's RayJob is checked too"


@needs_crds
@pytest.mark.parametrize("where,obj", kuberay_objects(), ids=[w for w, _ in kuberay_objects()])
def test_kuberay_manifest_matches_crd(where, obj):
    assert crd_errors(obj) == []
    assert "status" not in obj, "status is written by the operator"


@needs_crds
def test_crd_validation_rejects_bad_manifests():
    cluster = load_doc(K8S / "raycluster.yaml")
    assert crd_errors(cluster) == []

    def errors_after(change) -> str:
        bad = copy.deepcopy(cluster)
        change(bad)
        return "\n".join(crd_errors(bad))

    # Misspelled fields fail at every depth: the top-level spec, a worker group, the pod template.
    assert "enableInTreeAutoscalling" in errors_after(lambda c: c["spec"].update(enableInTreeAutoscalling=True))
    assert "minReplica" in errors_after(lambda c: c["spec"]["workerGroupSpecs"][0].update(minReplica=0))
    def container(c: dict) -> dict:
        return c["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]

    assert "imagePullPolicyy" in errors_after(lambda c: container(c).update(imagePullPolicyy="Always"))
    assert "nme" in errors_after(lambda c: c["metadata"].update(nme="x"))
    # Types, enums, required fields and int32 ranges.
    assert "maxReplicas" in errors_after(lambda c: c["spec"]["workerGroupSpecs"][0].update(maxReplicas="4"))
    assert "'tokens' is not one of" in errors_after(lambda c: c["spec"]["authOptions"].update(mode="tokens"))
    assert "groupName" in errors_after(lambda c: c["spec"]["workerGroupSpecs"][0].pop("groupName"))
    assert "int32" in errors_after(lambda c: c["spec"]["workerGroupSpecs"][0].update(maxReplicas=2**31))
    # rayStartParams values must be strings (num-cpus: 0 unquoted is a classic mistake).
    assert "num-cpus" in errors_after(lambda c: c["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}))
    # x-kubernetes-int-or-string: a port may be a number or a name, never a float.
    def probe_on(port):
        return lambda c: container(c).update(readinessProbe={"httpGet": {"path": "/", "port": port}})

    assert errors_after(probe_on(8265)) == "" and errors_after(probe_on("dashboard")) == ""
    assert "port" in errors_after(probe_on(8265.5))
    # x-kubernetes-list-type map: two container ports with the same containerPort/protocol.
    same_port = {"containerPort": 6379, "protocol": "TCP", "name": "again"}
    assert "duplicate" in errors_after(lambda c: container(c)["ports"].append(same_port))
    # CEL: managedBy takes two values only.
    assert "managedBy" in errors_after(lambda c: c["spec"].update(managedBy="me"))


@needs_crds
def test_crd_validation_checks_rayjob_and_raycronjob_rules():
    job = load_doc(K8S / "rayjob.yaml")
    bad = copy.deepcopy(job)
    bad["spec"]["deletionStrategy"] = {"onSuccess": {"policy": "DeleteCluster"}}
    assert any("BOTH onSuccess and onFailure" in e for e in crd_errors(bad))
    cron = load_doc(K8S / "raycronjob.yaml")
    bad = copy.deepcopy(cron)
    del bad["spec"]["schedule"]
    assert any("'schedule' is a required property" in e for e in crd_errors(bad))
    bad = copy.deepcopy(cron)
    bad["spec"]["jobTemplate"]["shutdownAfterJobFinish"] = True
    assert any("shutdownAfterJobFinish" in e for e in crd_errors(bad))


# ---------------------------------------------------------------------------------------------
# What the KubeRay operator checks beyond the schema (validation.go), and our own decisions
# ---------------------------------------------------------------------------------------------

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_RAYCLUSTER_NAME = 53  # KubeRay: 63 - len("-serve-svc")
MAX_RAYJOB_NAME = MAX_RAYCLUSTER_NAME - 6  # KubeRay appends 6 characters for the cluster's name
GENERATE_NAME_SUFFIX = 5  # the API server's random suffix


def object_name_length(metadata: dict) -> tuple[str, int]:
    if "name" in metadata:
        return metadata["name"], len(metadata["name"])
    return metadata["generateName"] + "x" * GENERATE_NAME_SUFFIX, len(metadata["generateName"]) + GENERATE_NAME_SUFFIX


def cluster_specs() -> list[tuple[str, dict]]:
    specs = []
    for where, obj in kuberay_objects():
        if obj["kind"] == "RayCluster":
            specs.append((where, obj["spec"]))
        elif obj["kind"] == "RayJob":
            specs.append((where, obj["spec"]["rayClusterSpec"]))
        elif obj["kind"] == "RayCronJob":
            specs.append((where, obj["spec"]["jobTemplate"]["rayClusterSpec"]))
    return specs


def ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]


def quantity(resources: dict, name: str):
    return parse_quantity(resources[name]) if name in resources else None


@pytest.mark.parametrize("where,spec", cluster_specs(), ids=[w for w, _ in cluster_specs()])
def test_ray_cluster_spec_follows_kuberay_rules_and_ours(where, spec):
    assert spec["rayVersion"] == ray_pin()
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"
    assert tuple(map(int, spec["rayVersion"].split("."))) >= (2, 52, 0), "KubeRay token auth needs Ray >= 2.52"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"] == {"num-cpus": "0"}, "the head takes no Ray work"
    groups = spec["workerGroupSpecs"]
    assert len({g["groupName"] for g in groups}) == len(groups)
    for group in [head, *groups]:
        # KubeRay refuses group-level `resources` next to num-cpus/num-gpus/memory in rayStartParams.
        assert not (group.get("resources") and set(group["rayStartParams"]) & {"num-cpus", "num-gpus", "memory"})
        assert "labels" not in group["rayStartParams"]
        pod = group["template"]["spec"]
        assert pod["containers"], "KubeRay uses the first container as the Ray container"
        # A second reading of the pod template with the kubernetes client's models. They are stricter
        # than the API server about quantities (cpu: 2 must be written "2"), which we follow anyway.
        k8s.V1PodTemplateSpec.model_validate(group["template"])
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            requests, limits = c["resources"]["requests"], c["resources"]["limits"]
            for name in limits:
                assert quantity(requests, name) <= quantity(limits, name), (c["name"], name)
            assert c["image"] == spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
            assert not c["image"].endswith(":latest") and ":" in c["image"]
    gpu_groups = [g for g in groups if "nvidia.com/gpu" in ray_container(g)["resources"]["limits"]]
    cpu_groups = [g for g in groups if g not in gpu_groups]
    assert gpu_groups and cpu_groups
    for g in groups:
        assert g["minReplicas"] == 0 and g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"]
    for g in gpu_groups:
        res = ray_container(g)["resources"]
        # Extended resources cannot be overcommitted: requests must equal limits.
        assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == "1"


def test_kuberay_names_fit_operator_limits():
    for where, obj in kuberay_objects():
        name, length = object_name_length(obj["metadata"])
        assert DNS1035.match(name), where
        limit = MAX_RAYCLUSTER_NAME if obj["kind"] == "RayCluster" else MAX_RAYJOB_NAME
        assert length <= limit, (where, length)


def test_rayjob_runs_the_catalogue_job_and_cleans_up():
    for where, obj in kuberay_objects():
        if obj["kind"] not in ("RayJob", "RayCronJob"):
            continue
        spec = obj["spec"] if obj["kind"] == "RayJob" else obj["spec"]["jobTemplate"]
        assert spec["shutdownAfterJobFinishes"] is True
        assert spec["ttlSecondsAfterFinished"] >= 0 and spec["activeDeadlineSeconds"] > 0
        assert spec.get("backoffLimit", 0) >= 0
        assert "clusterSelector" not in spec, "a fresh cluster per run"
        argv = shlex.split(spec["entrypoint"])
        assert argv[:2] == ["python", IMAGE_SCRIPT_DIR + "ray_jobs/index_catalogue.py"], where
        flags = dict(zip(argv[2::2], argv[3::2]))
        assert flags["--input"].startswith("s3://") and flags["--output"].startswith("s3://")
        assert set(flags) <= {"--input", "--output", "--config", "--detect-gpus", "--train-workers", "--max-videos"}


def test_entrypoint_flags_exist_in_the_catalogue_job():
    script = REPO / "ray_jobs" / "index_catalogue.py"
    if not script.is_file():
        pytest.skip(f"{script.relative_to(REPO)} is not in this checkout yet")
    text = script.read_text()
    spec = load_doc(K8S / "rayjob.yaml")["spec"]
    for flag in [a for a in shlex.split(spec["entrypoint"]) if a.startswith("--")]:
        assert f'"{flag}"' in text or f"'{flag}'" in text, f"{flag} is not an option of {script.name}"


def test_the_four_copies_of_the_run_agree():
    cluster = load_doc(K8S / "raycluster.yaml")
    job = load_doc(K8S / "rayjob.yaml")
    cron = load_doc(K8S / "raycronjob.yaml")
    (config_map,) = [d for d in load_docs(K8S / "cronjob.yaml") if d["kind"] == "ConfigMap"]
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]
    assert cron["spec"]["jobTemplate"] == job["spec"]
    assert yaml.safe_load(config_map["data"]["rayjob.yaml"]) == job


def test_secret_references_resolve():
    (secret,) = load_docs(K8S / "s3-secret.yaml")
    keys = set(secret["stringData"])
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"} <= keys
    for where, spec in cluster_specs():
        pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
        for pod in pods:
            refs = [e["secretRef"]["name"] for e in pod["spec"]["containers"][0].get("envFrom", [])]
            assert refs == [secret["metadata"]["name"]], where


CRON_FIELD_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def is_standard_cron(schedule: str) -> bool:
    """Five fields of *, numbers, ranges, lists and steps within each field's range."""
    fields = schedule.split()
    if len(fields) != 5:
        return False
    for text, (low, high) in zip(fields, CRON_FIELD_RANGES):
        for part in text.split(","):
            base, _, step = part.partition("/")
            if step and not step.isdigit():
                return False
            if base == "*":
                continue
            bounds = base.split("-")
            if len(bounds) > 2 or not all(b.isdigit() and low <= int(b) <= high for b in bounds):
                return False
    return True


def test_schedules_are_standard_cron_and_agree():
    assert is_standard_cron("*/15 0-6 1,15 * 1-5") and not is_standard_cron("0 25 * * *")
    cron = load_doc(K8S / "raycronjob.yaml")
    (cronjob,) = [d for d in load_docs(K8S / "cronjob.yaml") if d["kind"] == "CronJob"]
    assert is_standard_cron(cron["spec"]["schedule"])
    assert (cron["spec"]["schedule"], cron["spec"]["timeZone"]) == (
        cronjob["spec"]["schedule"],
        cronjob["spec"]["timeZone"],
    )


def test_raycronjob_feature_gate_is_documented():
    # The operator's gate is literally named RayCronJob (ray-operator/pkg/features, alpha since v1.6).
    for path in (K8S / "raycronjob.yaml", K8S / "README.md"):
        text = path.read_text()
        assert "RayCronJob=true" in text or "name: RayCronJob" in text, path.name
        assert "feature gate" in text.lower()


# ---------------------------------------------------------------------------------------------
# Plain Kubernetes objects: the official kubernetes client's (pydantic, extra="forbid") models
# ---------------------------------------------------------------------------------------------

PLAIN_MODELS = {
    ("batch/v1", "CronJob"): k8s.V1CronJob,
    ("v1", "ServiceAccount"): k8s.V1ServiceAccount,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.V1Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.V1RoleBinding,
    ("v1", "ConfigMap"): k8s.V1ConfigMap,
    ("v1", "Secret"): k8s.V1Secret,
}


def plain_objects() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for i, doc in enumerate(load_docs(path)):
            if not doc["apiVersion"].startswith("ray.io/"):
                found.append((f"{path.name}#{i}:{doc['kind']}", doc))
    return found


@pytest.mark.parametrize("where,obj", plain_objects(), ids=[w for w, _ in plain_objects()])
def test_plain_object_matches_kubernetes_model(where, obj):
    model = PLAIN_MODELS[(obj["apiVersion"], obj["kind"])]
    parsed = model.model_validate(obj)  # unknown fields, missing required fields and wrong types raise
    assert parsed.metadata.name and DNS1035.match(parsed.metadata.name)


def test_kubernetes_models_reject_bad_objects():
    (cronjob,) = [d for d in load_docs(K8S / "cronjob.yaml") if d["kind"] == "CronJob"]
    bad = copy.deepcopy(cronjob)
    bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["comand"] = ["kubectl"]
    with pytest.raises(Exception, match="comand"):
        k8s.V1CronJob.model_validate(bad)
    bad = copy.deepcopy(cronjob)
    del bad["spec"]["schedule"]
    with pytest.raises(Exception, match="schedule"):
        k8s.V1CronJob.model_validate(bad)


def test_cronjob_is_wired_to_its_account_role_and_configmap():
    docs = {d["kind"]: d for d in load_docs(K8S / "cronjob.yaml")}
    account, role, binding, config_map, cronjob = (
        docs[k] for k in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "CronJob")
    )
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    role_name = role["metadata"]["name"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"][:3] == ["kubectl", "create", "-f"]
    manifest = Path(container["command"][3])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map_name = config_map["metadata"]["name"]
    (volume_name,) = [n for n, v in volumes.items() if v.get("configMap", {}).get("name") == config_map_name]
    assert Path(mounts[volume_name]) == manifest.parent and manifest.name in config_map["data"]
    # `kubectl create` of a fixed name would fail the second night: the RayJob must use generateName.
    assert "generateName" in yaml.safe_load(config_map["data"][manifest.name])["metadata"]
    assert re.fullmatch(r"registry\.k8s\.io/kubectl:v1\.\d+\.\d+", container["image"])


# ---------------------------------------------------------------------------------------------
# Dockerfile: no Docker engine here, so a structural lint
# ---------------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        pending += (" " if pending else "") + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = pending.partition(" ")
            instructions.append((word.upper(), rest.strip()))
            pending = ""
    return instructions


def test_dockerfile_parser_joins_continuations():
    parsed = dockerfile_instructions("# c\nFROM a:1\nRUN x \\\n  # note\n  && y\nUSER 1000\n")
    assert parsed == [("FROM", "a:1"), ("RUN", "x && y"), ("USER", "1000")]


def test_dockerfile_structure():
    text = (K8S / "Dockerfile").read_text()
    steps = dockerfile_instructions(text)
    kinds = [k for k, _ in steps]
    assert kinds[0] == "FROM" and kinds.count("FROM") == 1
    base = steps[0][1]
    assert base == f"rayproject/ray:{ray_pin()}-py311-gpu", "base must carry the pinned Ray and Python 3.11"
    assert "latest" not in base and "@" not in base.split(":")[0]
    users = [args for k, args in steps if k == "USER"]
    assert users, "the image must not run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid, so pods can set runAsNonRoot"
    for _, spec in cluster_specs():
        assert str(spec["headGroupSpec"]["template"]["spec"]["securityContext"]["runAsUser"]) == uid
    (workdir,) = [args for k, args in steps if k == "WORKDIR"]
    assert workdir.startswith("/") and workdir.rstrip("/") + "/" == IMAGE_SCRIPT_DIR
    runs = " ".join(args for k, args in steps if k == "RUN")
    assert "pip install --no-cache-dir ." in runs
    assert not re.search(r"\b(curl|wget)\b|hf_hub|huggingface|gdown", runs), "no weights are downloaded"
    assert "ADD" not in kinds, "COPY only: ADD fetches URLs and unpacks archives"
    for run in [args for k, args in steps if k == "RUN" and "apt-get install" in args]:
        assert "--no-install-recommends" in run and "rm -rf /var/lib/apt/lists" in run
    for _, args in steps:
        assert "latest" not in args.split()


def test_dockerfile_copies_what_the_image_needs():
    steps = dockerfile_instructions((K8S / "Dockerfile").read_text())
    sources = [s for k, args in steps if k == "COPY" for s in shlex.split(args)[:-1] if not s.startswith("--")]
    assert {"pyproject.toml", "vcn", "ray_jobs"} <= set(sources)
    ignored = (K8S / "Dockerfile.dockerignore").read_text().split()
    assert not set(sources) & set(ignored), "the dockerignore must not drop what the image copies"
    missing = [s for s in sources if not (REPO / s).exists()]
    if missing == ["ray_jobs"]:
        pytest.skip("ray_jobs/ is not in this checkout yet")
    assert missing == []


def test_readme_documents_auth_and_licences():
    text = (K8S / "README.md").read_text()
    for needle in ("RAY_AUTH_MODE=token", "authOptions", "AGPL-3.0", "non-commercial", "Docker engine"):
        assert needle in text, needle


# ---------------------------------------------------------------------------------------------
# Token auth, for real: a token-protected head refuses `ray job submit` without the token
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_job_submit_carries_token(tmp_path):
    ray_bin = str(Path(sys.executable).parent / "ray")
    token = secrets.token_hex(16)
    gcs, dashboard, client, agent_http, agent_grpc, runtime_env, metrics, node_manager, object_manager = free_ports(9)
    home = tmp_path / "home"  # so neither side finds a token in the real ~/.ray/auth_token
    home.mkdir()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base_env["HOME"] = str(home)
    head_env = {**base_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    temp_dir = tempfile.mkdtemp(prefix="vcnray", dir="/tmp")  # short: Ray's unix sockets live here
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--num-cpus=1", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent_http}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
         f"--metrics-export-port={metrics}", f"--node-manager-port={node_manager}",
         f"--object-manager-port={object_manager}", f"--temp-dir={temp_dir}"],
        env=head_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"

    def submit(env: dict) -> subprocess.CompletedProcess:
        return subprocess.run(
            [ray_bin, "job", "submit", f"--address={address}", "--", "python", "-c", "print('vcn-token-ok')"],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip

    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", dashboard), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None and time.time() < deadline, "the Ray head did not come up"
                time.sleep(1)
        refused = submit(base_env)
        assert refused.returncode != 0
        assert "401" in refused.stdout + refused.stderr or "Authentication" in refused.stdout + refused.stderr
        accepted = submit({**base_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
        assert accepted.returncode == 0, accepted.stdout[-2000:] + accepted.stderr[-2000:]
        assert "vcn-token-ok" in accepted.stdout
    finally:
        # Only the processes this test started: the session that `ray start --block` leads.
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
