"""The Kubernetes manifests: strictly valid for two Kubernetes versions, wired to each other."""

from __future__ import annotations

import subprocess
import sys
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
    assert container["command"] == ["python", "-m", "training", "schedule", "--once"]
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
    assert claims == {"bundles", "datasets"}
    assert by_kind["PersistentVolumeClaim"]["bundles"]["spec"]["accessModes"] == ["ReadWriteMany"]
