"""Pin the images' dependencies: requirements/serving.txt, serving-gpu.txt and train.txt.

    python scripts/lock_requirements.py             # add what is missing, keep the other pins
    python scripts/lock_requirements.py --upgrade   # re-resolve every pin to the newest release

pip resolves the requirements of pyproject.toml's extras without installing anything
(``--dry-run --report``) and the exact versions are written out. Every lock also pins:

- the build backend (``[build-system] requires``: setuptools), so that the images install the
  project with ``--no-build-isolation`` and never fetch an unpinned setuptools at build time;
- the dependencies that only some Pythons the project supports need (``async-timeout`` for
  redis below Python 3.11.3, Debian bookworm's 3.11.2 among them), with their environment
  marker: pip evaluates markers for the Python running the lock, so these are found by
  evaluating every dependency's marker for each of ``PYTHONS`` as well.

Without ``--upgrade`` the existing pins are constraints (serving-gpu.txt is constrained by
serving.txt too, so both serving images share their versions); a lock whose pins conflict with
a new requirement is resolved afresh. ``serving-gpu.txt`` is the
serving lock with the GPU packages in place of the CPU ones (faiss-gpu-cu12 for faiss-cpu,
onnxruntime-gpu for onnxruntime: the same import names): the GPU image installs it instead of
serving.txt, never on top of it. The train lock leaves out torch and the CUDA libraries it
brings: the Dockerfile installs torch itself, from the CPU (or CUDA) wheel index.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# lock name -> (extras, whether the GPU packages replace the CPU ones, names left out)
TORCH_AND_CUDA = r"^(torch|triton|nvidia-.*|cuda-.*)$"
LOCKS: dict[str, tuple[list[str], bool, str]] = {
    "serving": (["serving"], False, TORCH_AND_CUDA),
    "serving-gpu": (["serving"], True, r"^(torch|triton)$"),
    "train": (["serving", "training", "text"], False, TORCH_AND_CUDA),
}
GPU_SWAPS = {"faiss-cpu": "faiss-gpu-cu12", "onnxruntime": "onnxruntime-gpu"}
PYTHONS = ("3.11.0", "3.11.2", "3.11.9", "3.12.0", "3.13.0", "3.14.0")  # requires-python >=3.11


def requirements(extras: list[str], gpu: bool) -> list[str]:
    """The project's base dependencies, the extras' and the build backend."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    optional = pyproject["project"]["optional-dependencies"]
    reqs = [*pyproject["project"]["dependencies"]]
    for extra in extras:
        reqs += optional[extra]
    if gpu:
        by_name = {canonicalize_name(Requirement(r).name): r for r in optional["gpu"]}
        reqs = [by_name[GPU_SWAPS[name]] if (name := canonicalize_name(Requirement(r).name))
                in GPU_SWAPS else r for r in reqs]
    return [*reqs, *pyproject["build-system"]["requires"]]


def dry_run(reqs: list[str], *, no_deps: bool = False,
            constraints: list[Path] = ()) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
             *(["--no-deps"] if no_deps else []),
             *(arg for path in constraints for arg in ("--constraint", str(path))),
             "--report", str(report), *reqs],
            cwd=ROOT, check=True,
        )
        return json.loads(report.read_text())["install"]


def conditional(installs: list[dict], pinned: set[str], constraints: list[Path]) -> list[str]:
    """Dependencies of the resolved packages that another supported Python needs (their marker
    is false here, true there), pinned with that marker."""
    found: dict[str, Requirement] = {}
    for item in installs:
        for line in item["metadata"].get("requires_dist") or []:
            req = Requirement(line)
            name = canonicalize_name(req.name)
            if req.marker is None or "extra" in str(req.marker) or name in pinned:
                continue
            if req.marker.evaluate():
                continue  # resolved above already
            envs = [{"python_version": v.rsplit(".", 1)[0], "python_full_version": v}
                    for v in PYTHONS]
            if any(req.marker.evaluate(env) for env in envs):
                found.setdefault(name, req)
    pins = []
    for _, req in sorted(found.items()):
        report = dry_run([f"{req.name}{req.specifier}"], no_deps=True, constraints=constraints)
        version = report[0]["metadata"]["version"]
        pins.append(f"{req.name}=={version} ; {req.marker}")
    return pins


def resolve(extras: list[str], gpu: bool, skipped: str, constraints: list[Path]) -> list[str]:
    try:
        installs = dry_run(requirements(extras, gpu), constraints=constraints)
    except subprocess.CalledProcessError:
        if not constraints:
            raise
        # a new requirement conflicts with an existing pin: resolve this lock afresh
        print(f"the pins of {', '.join(p.name for p in constraints)} conflict with the "
              "requirements: re-resolving without them", file=sys.stderr)
        constraints = []
        installs = dry_run(requirements(extras, gpu))
    pins = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in installs}
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())
             if not re.match(skipped, name, re.IGNORECASE)]
    return lines + conditional(installs, {canonicalize_name(n) for n in pins}, constraints)


def main() -> None:
    upgrade = "--upgrade" in sys.argv[1:]
    folder = ROOT / "requirements"
    folder.mkdir(exist_ok=True)
    for name, (extras, gpu, skipped) in LOCKS.items():
        existing = [folder / f"{lock}.txt" for lock in dict.fromkeys([name, name.split("-")[0]])]
        constraints = [] if upgrade else [path for path in existing if path.exists()]
        pins = resolve(extras, gpu, skipped, constraints)
        what = ",".join(extras) + (" with the GPU packages" if gpu else "")
        header = (f"# pip install -r requirements/{name}.txt: extras [{what}] and the build "
                  "backend,\n# pinned by scripts/lock_requirements.py "
                  "(do not edit)\n")
        (folder / f"{name}.txt").write_text(header + "\n".join(pins) + "\n")
        print(f"requirements/{name}.txt: {len(pins)} pins")


if __name__ == "__main__":
    main()
