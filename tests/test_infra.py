"""infra/: the KubeRay manifests validate against the CRD schemas and agree with the code they launch.

No cluster is needed. Every check is a function returning a list of problems; each is run on the real
files (no problems) and on a broken copy (a problem), so none of them can pass vacuously.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator
from packaging.specifiers import SpecifierSet

from pipeline.config import ConfigError, RelabelConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
# Vendored KubeRay v1.7.0 CRD schemas (their README says where they come from), so these tests always run.
SCHEMAS = INFRA / "schemas" / "kuberay"
SCHEMA_FILES = {
    "RayCluster": "raycluster-v1.json",
    "RayJob": "rayjob-v1.json",
    "RayService": "rayservice-v1.json",
    "RayCronJob": "raycronjob-v1.json",
}
ENTRYPOINT = ["python", "-m", "jobs.relabel"]
# KubeRay's limits (ray-operator/controllers/ray/utils/constant.go): a RayJob name becomes the
# RayCluster name plus a suffix, a RayCronJob name the RayJob name plus a tick suffix.
MAX_RAYJOB_NAME, MAX_RAYCRONJOB_NAME = 47, 36
NIGHT_SUFFIX = len("-20260101")
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LAUNCHER_VERBS = {"create", "get", "list", "watch", "delete"}
SECRET_ENV_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL|PRIVATE_KEY", re.IGNORECASE)
SECRET_TEXT = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{30,}", re.IGNORECASE),
    re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),  # Hugging Face token
]
Doc = tuple[str, dict]


@dataclass
class Infra:
    """Everything under infra/: parsed manifests (ConfigMap-embedded ones too) and raw file texts."""

    docs: list[Doc]
    texts: dict[str, str]


@functools.cache
def _load() -> Infra:
    docs: list[Doc] = []
    for path in _infra_files("*.y*ml"):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is None:
                continue
            where = f"{path.name}#{i}"
            docs.append((where, doc))
            if doc.get("kind") == "ConfigMap":
                for key, text in (doc.get("data") or {}).items():
                    if key.endswith((".yaml", ".yml")):
                        docs.extend(
                            (f"{where}/{key}#{j}", inner)
                            for j, inner in enumerate(yaml.safe_load_all(text))
                            if inner is not None
                        )
    texts = {p.name: p.read_text() for p in _infra_files("*") if p.is_file()}
    return Infra(docs, texts)


def _infra_files(pattern: str) -> list[Path]:
    """The deployable files under infra/: not the vendored schemas (data, and a README of their own)."""
    return [p for p in sorted(INFRA.rglob(pattern)) if not p.is_relative_to(SCHEMAS)]


@pytest.fixture
def infra() -> Infra:
    """A private deep copy, so a test may mutate it."""
    return copy.deepcopy(_load())


@pytest.fixture(scope="module")
def validators() -> dict[str, Draft7Validator]:
    return {
        kind: Draft7Validator(json.loads((SCHEMAS / name).read_text())) for kind, name in SCHEMA_FILES.items()
    }


# ---- lookups ----------------------------------------------------------------------------------------


def docs_of(infra: Infra, kind: str) -> list[Doc]:
    return [(where, doc) for where, doc in infra.docs if doc.get("kind") == kind]


def rayjob_specs(infra: Infra) -> dict[str, dict]:
    """Every RayJob spec that can run: RayJob objects (embedded ones too) and RayCronJob templates."""
    specs = {where: doc["spec"] for where, doc in docs_of(infra, "RayJob")}
    specs.update({where: doc["spec"]["jobTemplate"] for where, doc in docs_of(infra, "RayCronJob")})
    return specs


def one_off_spec(infra: Infra) -> dict:
    [spec] = [doc["spec"] for where, doc in docs_of(infra, "RayJob") if where == "rayjob-relabel.yaml#0"]
    return spec


def ray_containers(spec: dict) -> Iterator[tuple[str, dict, dict, dict]]:
    """(group name, group, pod spec, Ray container) for the head and every worker group."""
    cluster = spec["rayClusterSpec"]
    groups = [("head", cluster["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]
    for name, group in groups:
        pod = group["template"]["spec"]
        yield name, group, pod, pod["containers"][0]  # KubeRay treats the first container as Ray's


def gpus(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def quantity(value: str | int) -> float:
    """Bytes in a Kubernetes memory quantity ("48Gi", "512Mi", "1G", "1000")."""
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * _UNITS.get(unit, 1)


def entrypoint_config(spec: dict) -> tuple[RelabelConfig | None, list[str]]:
    """The run config the entrypoint produces, parsed the way bash does in KubeRay's submitter."""
    try:
        tokens = shlex.split(spec.get("entrypoint", ""))
    except ValueError as err:
        return None, [f"entrypoint does not parse: {err}"]
    if tokens[:3] != ENTRYPOINT:
        return None, [f"entrypoint must start with {' '.join(ENTRYPOINT)!r}, got {tokens[:3]}"]
    args = tokens[3:]
    if bad := [t for t in args if "=" not in t or t.startswith("-")]:
        return None, [f"entrypoint arguments must be key=value: {bad}"]
    try:
        return load_config(args), []
    except ConfigError as err:
        return None, [f"entrypoint: {err}"]


def ray_pin_version() -> str:
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        if m := re.fullmatch(r"ray(?:\[[^\]]*\])?==([\d.]+)", dep):
            return m.group(1)
    raise AssertionError("pyproject.toml does not pin ray==X.Y.Z")


# ---- checks -----------------------------------------------------------------------------------------


def check_schemas(infra: Infra, validators: dict[str, Draft7Validator]) -> list[str]:
    problems = []
    for where, doc in infra.docs:
        if not str(doc.get("apiVersion", "")).startswith("ray.io/"):
            continue
        kind = doc.get("kind")
        if doc["apiVersion"] != "ray.io/v1" or kind not in validators:
            problems.append(f"{where}: no ray.io/v1 schema for {doc['apiVersion']} {kind}")
            continue
        for err in validators[kind].iter_errors(doc):
            problems.append(f"{where}: {'/'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}")
    # The CRDs embed the core/v1 PodTemplateSpec schema; the CronJob's launcher pod is checked with it.
    pod_schema = validators["RayJob"].schema["properties"]["spec"]["properties"]["submitterPodTemplate"]
    for where, cron in docs_of(infra, "CronJob"):
        for err in Draft7Validator(pod_schema).iter_errors(cron["spec"]["jobTemplate"]["spec"]["template"]):
            problems.append(f"{where}: pod template: {'/'.join(map(str, err.absolute_path))}: {err.message}")
    return problems


def check_entrypoints(infra: Infra) -> list[str]:
    problems = []
    for where, spec in rayjob_specs(infra).items():
        cfg, errors = entrypoint_config(spec)
        problems += [f"{where}: {e}" for e in errors]
        if cfg is None:
            continue
        if not cfg.source.uris:
            problems.append(f"{where}: source.uris is empty")
        if not cfg.output.uri.startswith(("s3://", "gs://")):
            problems.append(
                f"{where}: output.uri {cfg.output.uri!r} is not object storage (pod disks vanish)"
            )
    return problems


def check_nightly_specs_match(infra: Infra) -> list[str]:
    """The nightly RayJobs (RayCronJob template, CronJob's ConfigMap) run exactly the one-off spec."""
    reference = yaml.safe_dump(one_off_spec(infra), sort_keys=True).splitlines()
    problems = []
    for where, spec in rayjob_specs(infra).items():
        if where == "rayjob-relabel.yaml#0":
            continue
        diff = list(
            difflib.unified_diff(reference, yaml.safe_dump(spec, sort_keys=True).splitlines(), lineterm="")
        )
        if diff:
            problems.append(f"{where} differs from rayjob-relabel.yaml:\n" + "\n".join(diff[2:]))
    return problems


def check_gpu_placement(infra: Infra) -> list[str]:
    """GPU groups request nvidia.com/gpu, hold exactly the scorer pool, cache weights on a volume."""
    problems = []
    for where, spec in rayjob_specs(infra).items():
        cfg, _ = entrypoint_config(spec)
        capacity = 0
        for name, group, pod, container in ray_containers(spec):
            resources = container.get("resources", {})
            if name == "head":
                if gpus(container) or group["rayStartParams"].get("num-cpus") != "0":
                    problems.append(f"{where}: the head must hold no GPU and num-cpus '0' (driver only)")
                continue
            if not gpus(container):
                continue
            requested = resources.get("requests", {}).get("nvidia.com/gpu")
            if requested is not None and int(requested) != gpus(container):
                problems.append(f"{where}: {name}: nvidia.com/gpu requests and limits differ")
            if (
                not group["minReplicas"]
                <= group.get("replicas", group["minReplicas"])
                <= group["maxReplicas"]
            ):
                problems.append(f"{where}: {name}: replicas outside [minReplicas, maxReplicas]")
            capacity += group.get("replicas", group["minReplicas"]) * gpus(container)
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            claims = {v["name"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            hf_home = env.get("HF_HOME") or ""
            if not any(hf_home.startswith(path) and vol in claims for path, vol in mounts.items()):
                problems.append(f"{where}: {name}: HF_HOME must be on a persistent volume (weights cache)")
        if capacity == 0:
            problems.append(f"{where}: no worker group requests nvidia.com/gpu")
        if cfg is not None and cfg.ray.scorer_actors * cfg.ray.scorer_num_gpus != capacity:
            problems.append(
                f"{where}: ray.scorer_actors={cfg.ray.scorer_actors} x ray.scorer_num_gpus="
                f"{cfg.ray.scorer_num_gpus} does not fill the {capacity} GPUs of the worker groups"
            )
    return problems


def check_pods(infra: Infra) -> list[str]:
    """Ray's object store gets a real /dev/shm; credentials come from a Secret; one image everywhere."""
    problems = []
    pin = ray_pin_version()
    for where, spec in rayjob_specs(infra).items():
        if spec["rayClusterSpec"].get("rayVersion") != pin:
            problems.append(
                f"{where}: rayVersion {spec['rayClusterSpec'].get('rayVersion')} != pyproject {pin}"
            )
        images = set()
        for name, _, pod, container in ray_containers(spec):
            images.add(container["image"])
            memory = quantity(container.get("resources", {}).get("limits", {}).get("memory", 0))
            shm = [m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            empty_dir = volumes.get(shm[0], {}).get("emptyDir", {}) if shm else {}
            if empty_dir.get("medium") != "Memory" or quantity(empty_dir.get("sizeLimit", 0)) < 0.3 * memory:
                problems.append(f"{where}: {name}: /dev/shm must be a Memory emptyDir >= 30% of memory")
            if not memory or not container["resources"]["limits"].get("cpu"):
                problems.append(f"{where}: {name}: cpu and memory limits are required")
            if not any("secretRef" in source for source in container.get("envFrom", [])):
                problems.append(f"{where}: {name}: no envFrom secretRef, credentials cannot reach the pod")
        if len(images) != 1:
            problems.append(f"{where}: Ray pods run different images {sorted(images)}")
    return problems


def _literal_secrets(node: object, where: str) -> Iterator[str]:
    if isinstance(node, dict):
        name = node.get("name")
        if isinstance(name, str) and SECRET_ENV_NAME.search(name) and node.get("value"):
            yield f"{where}: env {name} has a literal value; use a Secret (envFrom/secretKeyRef)"
        for value in node.values():
            yield from _literal_secrets(value, where)
    elif isinstance(node, list):
        for value in node:
            yield from _literal_secrets(value, where)


def check_no_secrets(infra: Infra) -> list[str]:
    problems = []
    for where, doc in infra.docs:
        if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
            problems.append(f"{where}: a Secret with data is checked in")
        problems += _literal_secrets(doc, where)
    for name, text in infra.texts.items():
        problems += [
            f"{name}: looks like a credential: {m.group(0)[:12]}..."
            for p in SECRET_TEXT
            for m in p.finditer(text)
        ]
    return problems


def check_names(infra: Infra) -> list[str]:
    problems = []
    for where, doc in infra.docs:
        name, kind = doc["metadata"].get("name", ""), doc.get("kind")
        nightly = "/" in where  # embedded in the ConfigMap: the launcher appends -YYYYMMDD
        limit = {
            "RayJob": MAX_RAYJOB_NAME - (NIGHT_SUFFIX if nightly else 0),
            "RayCronJob": MAX_RAYCRONJOB_NAME,
        }
        if kind in limit and (len(name) > limit[kind] or not DNS1035.match(name)):
            problems.append(
                f"{where}: {kind} name {name!r} is not a DNS-1035 label of <= {limit[kind]} chars"
            )
    return problems


def check_nightly(infra: Infra) -> list[str]:
    """Nightly runs cannot overlap, launch at most once a night, and the launcher has least privilege."""
    problems = []
    for where, spec in rayjob_specs(infra).items():
        if spec.get("activeDeadlineSeconds", 86400) + spec.get("ttlSecondsAfterFinished", 0) >= 86400:
            problems.append(
                f"{where}: activeDeadlineSeconds + ttl must be under a day or nightly runs overlap"
            )
    for where, cron in docs_of(infra, "RayCronJob"):
        if cron["spec"].get("timeZone") is None:
            problems.append(f"{where}: set timeZone (else the operator's local zone applies)")
    cronjobs = docs_of(infra, "CronJob")
    if not cronjobs:
        problems.append("no batch/v1 CronJob: the portable nightly alternative is missing")
    for where, cron in cronjobs:
        spec = cron["spec"]
        if spec.get("concurrencyPolicy") != "Forbid":
            problems.append(f"{where}: concurrencyPolicy must be Forbid")
        for key in (
            "startingDeadlineSeconds",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
            "timeZone",
        ):
            if key not in spec:
                problems.append(f"{where}: {key} is not set")
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        mounted = {v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
        holders = {
            doc["metadata"]["name"]
            for w, doc in docs_of(infra, "ConfigMap")
            if any(inner.startswith(f"{w}/") and d.get("kind") == "RayJob" for inner, d in infra.docs)
        }
        if not mounted & holders:
            problems.append(f"{where}: the pod does not mount a ConfigMap holding a RayJob")
        account = pod.get("serviceAccountName")
        roles = {
            b["roleRef"]["name"]
            for _, b in docs_of(infra, "RoleBinding")
            if any(s.get("kind") == "ServiceAccount" and s["name"] == account for s in b["subjects"])
        }
        rules = [
            r
            for _, role in docs_of(infra, "Role")
            if role["metadata"]["name"] in roles
            for r in role["rules"]
        ]
        if not any("create" in r["verbs"] and "rayjobs" in r["resources"] for r in rules):
            problems.append(f"{where}: service account {account!r} may not create rayjobs.ray.io")
        for rule in rules:
            if (
                rule["apiGroups"] != ["ray.io"]
                or rule["resources"] != ["rayjobs"]
                or set(rule["verbs"]) - LAUNCHER_VERBS
            ):
                problems.append(
                    f"{where}: launcher rule {rule} grants more than {sorted(LAUNCHER_VERBS)} on rayjobs"
                )
    return problems


def check_dockerfile(infra: Infra) -> list[str]:
    """Base image is Ray's pinned version on a Python the project supports; the project is installed."""
    text = infra.texts.get("Dockerfile", "")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    problems = []
    base = re.search(r"^FROM\s+(\S+)", text, re.MULTILINE)
    match = re.fullmatch(r"rayproject/ray:([\d.]+)-py(\d)(\d+)(-\S+)?", base.group(1)) if base else None
    if not match:
        return ["Dockerfile: FROM must be an official rayproject/ray:<version>-py<XY>[-gpu] image"]
    version, major, minor = match.group(1), match.group(2), match.group(3)
    if version != ray_pin_version():
        problems.append(f"Dockerfile: base image Ray {version} != pyproject pin {ray_pin_version()}")
    if not SpecifierSet(project["project"]["requires-python"]).contains(f"{major}.{minor}"):
        problems.append(f"Dockerfile: Python {major}.{minor} is outside requires-python")
    if not re.search(r"pip install [^\n]*\s\.(\s|$)", text):
        problems.append("Dockerfile: the project is not pip-installed (pip install .)")
    copied = {
        src.rstrip("/")
        for line in re.findall(r"^COPY\s+(.+)$", text, re.MULTILINE)
        for src in [t for t in line.split() if not t.startswith("--")][:-1]
    }
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    # conf/ is read next to the package and not part of the wheel, so the tree must be importable.
    if missing := sorted((packages | {"conf", "pyproject.toml"}) - copied):
        problems.append(f"Dockerfile: not copied into the image: {missing}")
    workdir = re.findall(r"^WORKDIR\s+(\S+)", text, re.MULTILINE)
    if not workdir or not re.search(rf"PYTHONPATH={re.escape(workdir[-1])}\b", text):
        problems.append("Dockerfile: PYTHONPATH must hold the source tree (conf/ is not in the wheel)")
    return problems


# ---- the real files pass ----------------------------------------------------------------------------


def test_infra_holds_the_expected_objects(infra):
    kinds = {(where.split("#")[0], doc["kind"]) for where, doc in infra.docs}
    for expected in [
        ("rayjob-relabel.yaml", "RayJob"),
        ("raycronjob-nightly.yaml", "RayCronJob"),
        ("cronjob-nightly.yaml", "CronJob"),
        ("cronjob-nightly.yaml", "ConfigMap"),
        ("cronjob-nightly.yaml", "Role"),
        ("cronjob-nightly.yaml", "RoleBinding"),
        ("cronjob-nightly.yaml", "ServiceAccount"),
    ]:
        assert expected in kinds
    # The one-off, the RayCronJob template and the ConfigMap's manifest.
    assert len(rayjob_specs(infra)) == 3
    assert {"Dockerfile", "README.md"} <= set(infra.texts)


def test_ray_objects_validate_against_the_kuberay_schemas(infra, validators):
    assert check_schemas(infra, validators) == []


def test_vendored_schemas_are_the_ones_their_readme_names():
    readme = (SCHEMAS / "README.md").read_text()
    listed = dict(re.findall(r"^\| `([\w-]+\.json)` \| `([0-9a-f]{64})` \|$", readme, re.MULTILINE))
    assert set(listed) == set(SCHEMA_FILES.values()) == {p.name for p in SCHEMAS.glob("*.json")}
    for name, digest in listed.items():
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize(
    "check",
    [check_entrypoints, check_nightly_specs_match, check_gpu_placement, check_pods, check_no_secrets,
     check_names, check_nightly, check_dockerfile],
)  # fmt: skip
def test_infra_passes(infra, check):
    problems = check(infra)
    assert problems == [], "\n".join(problems)


# ---- and every check fails on a broken copy ---------------------------------------------------------


def _embedded(infra: Infra) -> dict:
    [spec] = [doc["spec"] for where, doc in docs_of(infra, "RayJob") if "/" in where]
    return spec


def _gpu_group(spec: dict) -> dict:
    return next(g for g in spec["rayClusterSpec"]["workerGroupSpecs"] if g["groupName"] == "gpu")


def _container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]


def _set_entrypoint_arg(spec: dict, old: str, new: str) -> None:
    assert old in spec["entrypoint"]
    spec["entrypoint"] = spec["entrypoint"].replace(old, new)


def _edit_text(infra: Infra, name: str, old: str, new: str) -> None:
    assert old in infra.texts[name]
    infra.texts[name] = infra.texts[name].replace(old, new)


def _doc(infra: Infra, kind: str) -> dict:
    return docs_of(infra, kind)[0][1]


MUTATIONS: list = []


def breaks(check: Callable[[Infra], list[str]], expected: str) -> Callable:
    """Register a mutation that ``check`` must report with a problem containing ``expected``."""

    def register(mutate: Callable[[Infra], None]) -> Callable[[Infra], None]:
        MUTATIONS.append(pytest.param(mutate, check, expected, id=mutate.__name__))
        return mutate

    return register


@breaks(check_entrypoints, "ray.scorer_actor")
def unknown_config_key(i):
    _set_entrypoint_arg(one_off_spec(i), "ray.scorer_actors=", "ray.scorer_actor=")


@breaks(check_entrypoints, "scorer_num_gpus")
def mistyped_config_value(i):
    _set_entrypoint_arg(one_off_spec(i), "ray.scorer_num_gpus=1", "ray.scorer_num_gpus=one")


@breaks(check_entrypoints, "must start with")
def wrong_module(i):
    _set_entrypoint_arg(one_off_spec(i), "jobs.relabel", "jobs.relabl")


@breaks(check_entrypoints, "not object storage")
def output_on_pod_disk(i):
    _set_entrypoint_arg(one_off_spec(i), "output.uri=s3://", "output.uri=/tmp/")


@breaks(check_nightly_specs_match, "replicas")
def nightly_drifts(i):
    _gpu_group(_embedded(i))["replicas"] = 3


@breaks(check_gpu_placement, "no worker group requests nvidia.com/gpu")
def no_gpu_requested(i):
    _container(_gpu_group(one_off_spec(i)))["resources"]["limits"].pop("nvidia.com/gpu")


@breaks(check_gpu_placement, "does not fill")
def scorer_pool_larger_than_gpus(i):
    _set_entrypoint_arg(one_off_spec(i), "ray.scorer_actors=4", "ray.scorer_actors=8")


@breaks(check_gpu_placement, "head")
def work_lands_on_the_head(i):
    one_off_spec(i)["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].pop("num-cpus")


@breaks(check_gpu_placement, "HF_HOME")
def weights_not_cached(i):
    _container(_gpu_group(one_off_spec(i))).pop("env")


@breaks(check_pods, "/dev/shm")
def no_shared_memory(i):
    _container(_gpu_group(one_off_spec(i)))["volumeMounts"] = []


@breaks(check_pods, "secretRef")
def no_credentials(i):
    _container(_gpu_group(one_off_spec(i))).pop("envFrom")


@breaks(check_pods, "rayVersion")
def ray_version_drifts(i):
    one_off_spec(i)["rayClusterSpec"]["rayVersion"] = "2.59.0"


@breaks(check_no_secrets, "literal value")
def literal_secret_in_env(i):
    env = _container(_gpu_group(one_off_spec(i)))["env"]
    env.append({"name": "AWS_SECRET_ACCESS_KEY", "value": "not-a-real-secret"})


@breaks(check_no_secrets, "credential")
def access_key_in_a_file(i):
    i.texts["README.md"] += "AWS_ACCESS_KEY_ID=AKIA" + "ABCDEFGHIJKLMNOP\n"


@breaks(check_names, "RayCronJob name")
def cron_name_too_long(i):
    _doc(i, "RayCronJob")["metadata"]["name"] = "topreward-relabel-nightly-for-so100-only"


@breaks(check_nightly, "under a day")
def nightly_runs_may_overlap(i):
    one_off_spec(i).pop("activeDeadlineSeconds")


@breaks(check_nightly, "Forbid")
def launcher_may_overlap(i):
    _doc(i, "CronJob")["spec"]["concurrencyPolicy"] = "Allow"


@breaks(check_nightly, "grants more")
def launcher_over_privileged(i):
    _doc(i, "Role")["rules"][0]["verbs"] = ["*"]


@breaks(check_dockerfile, "requires-python")
def image_on_wrong_python(i):
    _edit_text(i, "Dockerfile", "-py312-", "-py311-")


@breaks(check_dockerfile, "conf")
def conf_not_copied(i):
    _edit_text(i, "Dockerfile", "COPY --chown=1000:100 conf ./conf", "")


@pytest.mark.parametrize(("mutate", "check", "expected"), MUTATIONS)
def test_check_catches(infra, mutate, check, expected):
    assert check(infra) == []
    mutate(infra)
    problems = check(infra)
    assert any(expected in p for p in problems), problems


SCHEMA_MUTATIONS = {
    # rayStartParams values are strings for `ray start`; an int is a classic YAML slip.
    "rayStartParams int": lambda i: one_off_spec(i)["rayClusterSpec"]["headGroupSpec"][
        "rayStartParams"
    ].update({"num-cpus": 0}),
    "replicas as text": lambda i: _gpu_group(one_off_spec(i)).update(minReplicas="4"),
    "no head group": lambda i: one_off_spec(i)["rayClusterSpec"].pop("headGroupSpec"),
    "cron without schedule": lambda i: _doc(i, "RayCronJob")["spec"].pop("schedule"),
    "embedded RayJob broken": lambda i: _gpu_group(_embedded(i)).pop("groupName"),
    "launcher pod broken": lambda i: _doc(i, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"
    ][0].update(args="not a list"),
}


@pytest.mark.parametrize("mutate", SCHEMA_MUTATIONS.values(), ids=SCHEMA_MUTATIONS.keys())
def test_schema_validation_catches(infra, validators, mutate):
    mutate(infra)
    assert check_schemas(infra, validators) != []
