"""The Kubernetes manifests: strictly valid for two Kubernetes versions, wired to each other."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VERSIONS = ("1.36.0", "1.37.0")
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


def _resources() -> list[Path]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [K8S / name for name in kustomization["resources"]]


def _documents() -> list[dict]:
    return [d for path in _resources() for d in yaml.safe_load_all(path.read_text()) if d]


def _validate(paths: list[Path], version: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VALIDATE), "--strict", "--quiet", "-k", version, *map(str, paths)],
                          capture_output=True, text=True)


def test_kustomization_lists_every_manifest() -> None:
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert {p.name for p in _resources()} == files


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_strictly_valid(version: str, tmp_path: Path) -> None:
    result = _validate(_resources(), version)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yaml"  # the check can fail: a misspelt field is refused
    broken.write_text((K8S / "api.yaml").read_text().replace("readinessProbe", "readinesProbe"))
    assert _validate([broken], version).returncode != 0


def test_cronjob_probes_and_volumes_are_what_the_service_needs() -> None:
    by_kind = {}
    for doc in _documents():
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    cron = by_kind["CronJob"]["retrain"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid" and cron["timeZone"]
    assert cron["startingDeadlineSeconds"] > 0
    container = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["python", "-m", "training", "schedule", "--once"]
    api = by_kind["Deployment"]["api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["resources"]["requests"] and api["resources"]["limits"]
    hpa = by_kind["HorizontalPodAutoscaler"]["api"]["spec"]["scaleTargetRef"]
    assert hpa["name"] == "api" and hpa["kind"] == "Deployment"
    config = by_kind["ConfigMap"]["mmrec-config"]["data"]
    assert config["RECSYS_BUNDLE"] == config["RECSYS_BUNDLES_ROOT"] + "/current"
    claims = {c for doc in _documents() if doc["kind"] == "PersistentVolumeClaim"
              for c in [doc["metadata"]["name"]]}
    assert claims == {"bundles", "datasets", "state"}
    assert by_kind["PersistentVolumeClaim"]["bundles"]["spec"]["accessModes"] == ["ReadWriteMany"]
    # ReadOnlyMany is missing from many storage classes; one training pod at a time uses these
    for name in ("datasets", "state"):
        assert by_kind["PersistentVolumeClaim"][name]["spec"]["accessModes"] == ["ReadWriteOnce"]


def _pod_specs() -> dict[str, dict]:
    """Workload name -> its pod spec."""
    specs = {}
    for doc in _documents():
        spec = doc.get("spec", {})
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            specs[doc["metadata"]["name"]] = spec["template"]["spec"]
    return specs


def _our_containers() -> list[tuple[str, dict]]:
    """(workload, container) for every main container running one of the project's images."""
    return [(name, c) for name, spec in _pod_specs().items() for c in spec["containers"]
            if c["image"] in ("mmrec-serve", "mmrec-train")]


def test_images_have_a_registry_name_and_a_pinned_tag() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    images = {i["name"]: i for i in kustomization["images"]}
    assert set(images) == {"mmrec-serve", "mmrec-train"}
    for name, image in images.items():
        registry, _, repository = image["newName"].partition("/")
        assert "." in registry or ":" in registry, image  # a registry host, not a Docker Hub name
        assert repository.endswith(name), image
        assert image["newTag"] and image["newTag"] != "latest", image
    used = {c["image"] for spec in _pod_specs().values()
            for c in spec["containers"] + spec.get("initContainers", [])}
    assert used & set(images) == set(images)


def test_containers_keep_the_image_entrypoint() -> None:
    """``command`` would replace the ENTRYPOINT (dumb-init, the read check): ``args`` only."""
    ours = _our_containers()
    assert {name for name, _ in ours} == {"api", "bootstrap", "retrain"}
    for name, container in ours:
        assert "command" not in container and container["args"][0] == "python", name


def test_the_database_password_has_one_source() -> None:
    secret = next(d for d in _documents() if d["kind"] == "Secret")
    assert "POSTGRES_PASSWORD" in secret["stringData"]
    assert not any("postgresql://" in str(v) for v in secret["stringData"].values())
    config = next(d for d in _documents() if d["kind"] == "ConfigMap")["data"]
    available = set(config) | set(secret["stringData"])
    for name, container in _our_containers():
        env = {e["name"]: e for e in container.get("env", [])}
        url = env["RECSYS_DATABASE_URL"]["value"]
        assert url.startswith("postgresql://") and "$(POSTGRES_PASSWORD)" in url, name
        assert set(re.findall(r"\$\((\w+)\)", url)) <= available, name
    postgres = _pod_specs()["postgres"]["containers"][0]
    refs = {e["name"]: e["valueFrom"] for e in postgres["env"] if "valueFrom" in e}
    assert refs["POSTGRES_PASSWORD"]["secretKeyRef"]["key"] == "POSTGRES_PASSWORD"
    assert refs["POSTGRES_USER"]["configMapKeyRef"]["key"] == "POSTGRES_USER"


def test_training_pods_keep_their_state_and_the_bootstrap_fills_the_datasets() -> None:
    config = next(d for d in _documents() if d["kind"] == "ConfigMap")["data"]
    assert config["RECSYS_CACHE_DIR"].startswith("/state/")
    specs = _pod_specs()
    for name in ("bootstrap", "retrain"):
        mounts = {m["mountPath"]: m for m in specs[name]["containers"][0]["volumeMounts"]}
        assert mounts["/state"]["name"] == "state" and not mounts["/state"].get("readOnly"), name
        assert mounts["/data"]["readOnly"], name
    loader = specs["bootstrap"]["initContainers"][0]
    assert loader["name"] == "load-datasets" and loader["image"] == "mmrec-train"
    mount = next(m for m in loader["volumeMounts"] if m["mountPath"] == "/data")
    assert mount["name"] == "datasets" and not mount.get("readOnly")
    claim = next(v for v in specs["bootstrap"]["volumes"] if v["name"] == "datasets")
    assert not claim["persistentVolumeClaim"].get("readOnly")  # the loader writes it
    assert "DATASETS_URL" in config


def test_the_dataset_loader_fills_an_empty_volume_and_refuses_without_a_url(
    tmp_path: Path,
) -> None:
    """The init container's script, run here: a no-op when the data is there, a download and
    unpack of DATASETS_URL when it is not, a clear failure without a URL."""
    loader = _pod_specs()["bootstrap"]["initContainers"][0]
    assert loader["command"][:2] == ["python", "-c"]
    script = loader["command"][2]
    data = tmp_path / "data"
    data.mkdir()
    env = {"PATH": os.environ["PATH"], "RECSYS_DATA_DIR": str(data), "RECSYS_DATA": "tiktok"}

    def run(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script], env={**env, **extra},
                              capture_output=True, text=True, timeout=60)

    refused = run(DATASETS_URL="")
    assert refused.returncode != 0 and "DATASETS_URL" in refused.stderr
    source = tmp_path / "src" / "tiktok"
    source.mkdir(parents=True)
    (source / "tiktok.inter").write_text("userID\titemID\n0\t0\n")
    archive = tmp_path / "datasets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="tiktok")
    loaded = run(DATASETS_URL=archive.as_uri())
    assert loaded.returncode == 0, loaded.stderr
    assert (data / "tiktok" / "tiktok.inter").exists()
    again = run(DATASETS_URL="")
    assert again.returncode == 0 and "is there" in again.stdout
