"""Pin the images' dependencies: requirements/serving.txt and requirements/train.txt.

    python scripts/lock_requirements.py

pip resolves the extras without installing anything (``--dry-run --report``) and the exact
versions are written out. The train lock leaves out torch and the CUDA libraries it brings:
the Dockerfile installs torch itself, from the CPU (or CUDA) wheel index.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = {"serving": "serving", "train": "serving,training,text"}
SKIPPED = re.compile(r"^(mmrec-service|torch|triton|nvidia-.*|cuda-.*)$", re.IGNORECASE)


def resolve(extras: str) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
             "--report", str(report), f".[{extras}]"],
            cwd=ROOT, check=True,
        )
        installs = json.loads(report.read_text())["install"]
    pins = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in installs}
    return [f"{name}=={version}" for name, version in sorted(pins.items())
            if not SKIPPED.match(name)]


def main() -> None:
    folder = ROOT / "requirements"
    folder.mkdir(exist_ok=True)
    for name, extras in LOCKS.items():
        pins = resolve(extras)
        header = f"# pip install -r requirements/{name}.txt: extras [{extras}], pinned by " \
                 "scripts/lock_requirements.py (do not edit)\n"
        (folder / f"{name}.txt").write_text(header + "\n".join(pins) + "\n")
        print(f"requirements/{name}.txt: {len(pins)} pins")


if __name__ == "__main__":
    main()
