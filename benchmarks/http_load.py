"""Load generation for the serving benchmark: comparison apps, uvicorn servers, ``wrk`` and
its Lua scripts (:mod:`benchmarks.serving`)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


FLOOR_APP = """
import sys, uvicorn
from fastapi import FastAPI
app = FastAPI()
@app.get("/")
async def constant():
    return {"ok": True}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


NAIVE_APP = """
import sys, numpy as np, uvicorn
from fastapi import FastAPI
items = np.load(sys.argv[2], mmap_mode="r").astype(np.float32)
users = np.load(sys.argv[3]).astype(np.float32)
app = FastAPI()
@app.get("/recommend/{user}")
def recommend(user: int, k: int = 20):
    scores = items @ users[user % len(users)]  # the full matrix product, every request
    top = np.argpartition(-scores, k)[:k]
    top = top[np.argsort(-scores[top])]
    return {"items": [{"item": int(i), "score": float(scores[i])} for i in top]}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


MINIMAL_FAISS_APP = """
import sys, faiss, numpy as np, uvicorn
from fastapi import FastAPI
faiss.omp_set_num_threads(1)
items = np.load(sys.argv[2]).astype(np.float32)
users = np.load(sys.argv[3]).astype(np.float32)
index = faiss.IndexFlatIP(items.shape[1])
index.add(items)
app = FastAPI()
@app.get("/recommend/{user}")
async def recommend(user: int, k: int = 20):
    scores, rows = index.search(users[user % len(users)][None], k)  # one exact search
    return {"items": [{"item": int(i), "score": float(s)} for i, s in zip(rows[0], scores[0])]}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)


def start(command: list[str], port: int, ready_path: str, env: dict | None = None,
          log: Path | None = None, timeout: float = 600) -> Server:
    sink = log.open("ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})},
                               stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited with {process.returncode} (see {log})")
        try:
            if httpx.get(url + ready_path, timeout=2).status_code == 200:
                return Server(process, url)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{command} not ready after {timeout}s")


@dataclass
class Cell:
    name: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    note: str = ""


def wrk(url: str, concurrency: int, duration: float, script: Path | None = None) -> dict:
    threads = 1 if concurrency == 1 else 2  # two cores: more wrk threads only steal CPU
    command = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration:g}s", "--latency",
               "--timeout", "10s"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> dict:
    def seconds(value: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
        return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": seconds(percentiles["50"]) * 1e3,
        "p99_ms": seconds(percentiles["99"]) * 1e3,
        "errors": (int(errors.group(1)) if errors else 0)
        + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
    }


def lua_strings(values: list[str]) -> str:
    return "{" + ",".join(json.dumps(v) for v in values) + "}"


THREAD_IDS = """
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
"""


def script_users(path: Path, users: list[str], k_base: int | None = None) -> Path:
    """GET /recommend over ``users`` (threads interleave). With ``k_base``, k runs through
    k_base..k_base+9, so every request is a new (user, k) cache key until the list wraps ten
    times; give each cell its own k_base."""
    quoted = [urllib.parse.quote(u, safe="") for u in users]
    path.write_text(THREAD_IDS + f"""
users = {lua_strings(quoted)}
counter = 0
request = function()
  local i = counter * 2 + (id or 0)
  counter = counter + 1
  local k = 20
  if {k_base is not None and "true" or "false"} then
    k = {k_base or 0} + math.floor(i / #users) % 10
  end
  return wrk.format("GET", "/recommend/" .. users[i % #users + 1] .. "?k=" .. k)
end
""")
    return path


def script_history(path: Path, items: list[str], length: int = 20) -> Path:
    """POST /recommend with a random ``length``-item history per request (cache misses)."""
    path.write_text(THREAD_IDS + f"""
items = {lua_strings([json.dumps(i) for i in items])}
request = function()
  local picked = {{}}
  for n = 1, {length} do picked[n] = items[math.random(#items)] end
  local body = '{{"history": [' .. table.concat(picked, ",") .. '], "k": 20}}'
  return wrk.format("POST", "/recommend", {{["Content-Type"] = "application/json"}}, body)
end
""")
    return path


def script_ingest(path: Path, modalities: list[tuple[str, int]], batch: int, seed: int) -> Path:
    """POST /items with ``batch`` random items; ids are unique per request (``@@`` is replaced
    by thread and request number), so every item is a real insert."""
    rng = np.random.default_rng(seed)
    items = []
    for n in range(batch):
        features = {name: [round(float(x), 4) for x in rng.normal(size=dim)]
                    for name, dim in modalities}
        items.append({"item_id": f"bench-@@-{n}", "features": features})
    template = json.dumps({"items": items})
    path.write_text(THREAD_IDS + f"""
template = [==[{template}]==]
counter = 0
request = function()
  counter = counter + 1
  local body = template:gsub("@@", (id or 0) .. "-" .. counter)
  return wrk.format("POST", "/items", {{["Content-Type"] = "application/json"}}, body)
end
""")
    return path


def script_text_ingest(path: Path, titles: list[str], batch: int, bodies: int = 32) -> Path:
    """POST /items with ``batch`` raw titles per request (a text bundle), real titles in turn
    (so lengths are as in traffic), each a new item id (``@@`` as in :func:`script_ingest`)."""
    texts = []
    for body in range(bodies):
        items = [{"item_id": f"text-@@-{n}", "text": titles[(body * batch + n) % len(titles)]}
                 for n in range(batch)]
        texts.append(json.dumps({"items": items}, ensure_ascii=False))
    if any("]==]" in text for text in texts):
        raise ValueError("a title closes the Lua long string")
    listed = ",\n".join(f"[==[{text}]==]" for text in texts)
    path.write_text(THREAD_IDS + f"""
bodies = {{{listed}}}
counter = 0
request = function()
  counter = counter + 1
  local body = bodies[counter % #bodies + 1]:gsub("@@", (id or 0) .. "-" .. counter)
  return wrk.format("POST", "/items", {{["Content-Type"] = "application/json"}}, body)
end
""")
    return path


def script_naive(path: Path) -> Path:
    path.write_text(THREAD_IDS + """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/recommend/" .. (counter * 2 + (id or 0)) % 1000)
end
""")
    return path


def cache_counts(url: str) -> dict[str, float]:
    """Cache lookups by result (hit, miss, bypass), summed over layers."""
    text = httpx.get(url + "/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for m in re.finditer(r'^recsys_cache_requests_total\{(.*)\} ([\d.e+]+)$', text, re.MULTILINE):
        result = re.search(r'result="(\w+)"', m.group(1)).group(1)
        counts[result] = counts.get(result, 0.0) + float(m.group(2))
    return counts


def stage_totals(url: str) -> dict[str, tuple[float, float]]:
    """``recsys_stage_seconds`` by stage: (seconds, calls) so far."""
    text = httpx.get(url + "/metrics", timeout=10).text
    totals: dict[str, list[float]] = {}
    for m in re.finditer(r'^recsys_stage_seconds_(sum|count)\{stage="([\w.]+)"\} ([\d.e+-]+)$',
                         text, re.MULTILINE):
        pair = totals.setdefault(m.group(2), [0.0, 0.0])
        pair[0 if m.group(1) == "sum" else 1] += float(m.group(3))
    return {stage: (pair[0], pair[1]) for stage, pair in totals.items()}


def stage_line(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]],
               requests: float) -> str:
    """Mean milliseconds of each stage a request between two :func:`stage_totals`."""
    parts = []
    for stage, (seconds, calls) in sorted(after.items()):
        spent = seconds - before.get(stage, (0.0, 0.0))[0]
        made = calls - before.get(stage, (0.0, 0.0))[1]
        if made > 0 and requests > 0:
            parts.append(f"{stage} {1000 * spent / requests:.3f} ms ({made / requests:.2f} calls)")
    return "stages a request: " + (", ".join(parts) or "none timed")


def hit_ratio(before: dict[str, float], after: dict[str, float]) -> str:
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("hit", "miss", "bypass")}
    total = sum(delta.values())
    return f"hit ratio {delta['hit'] / total:.2f}" if total else ""
