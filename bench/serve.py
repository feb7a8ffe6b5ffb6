"""How live does `facevae serve` feel? Decode latency and throughput of the explorer's API at 64×64.

For the default CVAE (64×64, latent 64, width 2, all 17 attributes as the condition) and the
hierarchical CPU preset (`--preset hvae-cpu32`, here at `--image-size 64`), each briefly trained
(one epoch on a few hundred synthetic faces: latency does not depend on how well a model is
trained), this starts `facevae serve RUN --port 0` in its own process and measures over HTTP what
the page does while a slider is dragged:

  baseline    the model's own decode of one face in this process (no HTTP, no PNG): what the server adds
              is the difference
  latency     one client, one request at a time: POST /decode with one slider value changed each
              time, for a test face and for a prior sample (a hierarchical model decodes those in
              its sampling mode): round trip p50/p95 in ms, the server's own decode+encode time
              (X-Decode-Ms) p50/p95, and the PNG's size
  concurrent  4 clients, each sending the next request as soon as the last is answered, for a fixed
              time: requests/s and round trip p50/p95

    .venv/bin/python bench/serve.py                      # ~3 minutes on 2 cores
    .venv/bin/python bench/serve.py --requests 100 --seconds 5 --json out.json

The clients run in this process, on the same cores as the server: the round trips include their
share of the CPU, which is what a browser on the same laptop costs too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from machine import cpu_name

FACEVAE = [sys.executable, "-m", "facevae"]
QUICK = ["--epochs", "1", "--eval-k", "2", "--eval-batches", "1", "--no-progress", "--patience", "0"]
MODELS = {
    "default CVAE (64×64, latent 64, k=2)": ["--model", "cvae"],
    "hvae-cpu32 preset at 64×64": ["--preset", "hvae-cpu32", "--image-size", "64"],
}


def ensure_data(work: Path, n: int) -> Path:
    data = work / f"synth_{n}"
    if not (data / "splits" / "stratified.npy").is_file():
        subprocess.run([*FACEVAE, "data", "synth", str(data), "--n", str(n), "--size", "64"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([*FACEVAE, "data", "split", str(data), "--strategy", "stratified"], check=True,
                       stdout=subprocess.DEVNULL)
    return data


def ensure_run(data: Path, run: Path, flags: list[str]) -> Path:
    if not (run / "model.safetensors").is_file():
        subprocess.run([*FACEVAE, "train", "--data", str(data), "--split", "stratified", "--run-dir", str(run),
                        *QUICK, *flags], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run


class Server:
    """`facevae serve RUN --port 0` in its own process, for the time of a with-block."""

    def __init__(self, run: Path):
        self.process = subprocess.Popen([*FACEVAE, "serve", str(run), "--port", "0"], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        for line in self.process.stdout:
            found = re.search(r"facevae explorer: (http://\S+)", line)
            if found:
                self.address = found.group(1).rstrip("/")
                break
        else:
            raise RuntimeError(f"facevae serve {run} stopped before listening")
        threading.Thread(target=lambda: [None for _ in self.process.stdout], daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(10)


def bodies(client: httpx.Client, address: str, face: dict, n: int, offset: int = 0) -> tuple[list[dict], str]:
    """``n`` decode requests as a drag sends them: the first slider swept through its range."""
    run = client.get(f"{address}/api/runs").json()["runs"][0]["id"]
    dims = client.get(f"{address}/api/runs/{run}/dims").json()["sliders"]
    dim = dims[0]["dim"]
    values = np.sin(np.arange(offset, offset + n) * 0.37) * 3
    return [{"face": face, "values": {str(dim): round(float(v), 3)}} for v in values], run


def percentiles(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def latency(address: str, face: dict, n: int) -> dict:
    with httpx.Client(timeout=60) as client:
        requests, run = bodies(client, address, face, n + 10)
        url = f"{address}/api/runs/{run}/decode"
        for body in requests[:10]:  # warm-up: the face's codes, a sampling-mode copy, the allocator
            client.post(url, json=body).raise_for_status()
        rounds, server, sizes = [], [], []
        for body in requests[10:]:
            started = time.perf_counter()
            response = client.post(url, json=body)
            rounds.append((time.perf_counter() - started) * 1e3)
            response.raise_for_status()
            server.append(float(response.headers["x-decode-ms"]))
            sizes.append(len(response.content))
    (p50, p95), (s50, s95) = percentiles(rounds), percentiles(server)
    return {"p50_ms": p50, "p95_ms": p95, "server_p50_ms": s50, "server_p95_ms": s95,
            "png_bytes": float(np.median(sizes)), "requests": n}


def concurrent(address: str, face: dict, clients: int, seconds: float) -> dict:
    rounds: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    def client_loop(k: int):
        with httpx.Client(timeout=60) as client:
            requests, run = bodies(client, address, face, 4000, offset=1000 * k)
            url = f"{address}/api/runs/{run}/decode"
            client.post(url, json=requests[0]).raise_for_status()
            start.wait()
            deadline = time.perf_counter() + seconds
            i = 0
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                client.post(url, json=requests[i % len(requests)]).raise_for_status()
                rounds[k].append((time.perf_counter() - t) * 1e3)
                i += 1

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = [r for per in rounds for r in per]
    p50, p95 = percentiles(every)
    return {"clients": clients, "requests_per_s": len(every) / elapsed, "p50_ms": p50, "p95_ms": p95,
            "requests": len(every), "seconds": elapsed}


def decode_alone(path: Path, n: int) -> dict:
    """The baseline, in this process before the server starts: the model's decode of a test face's codes with
    one unit changed, no HTTP and no PNG."""
    from facevae.training.rundir import open_run

    run = open_run(path)
    model = run.model.eval()
    x, y, _ = run.test_batch(1, 0)
    c = run.condition_of(y)
    times = []
    with torch.inference_mode():
        codes = model.encode(x, c).codes().clone()
        for i in range(n + 10):
            codes[0, 0] = float(np.sin(i * 0.37) * 3)
            started = time.perf_counter()
            model.decode(codes, c).image()
            times.append((time.perf_counter() - started) * 1e3)
    p50, p95 = percentiles(times[10:])
    return {"p50_ms": p50, "p95_ms": p95, "requests": n}


def measure(run: Path, args) -> dict:
    test, prior = {"kind": "test", "index": 0}, {"kind": "prior", "seed": 7, "temperature": 0.8}
    alone = decode_alone(run, args.requests)
    with Server(run) as server:
        return {"decode alone": alone, "test face": latency(server.address, test, args.requests),
                "prior sample": latency(server.address, prior, args.requests),
                "concurrent": concurrent(server.address, test, args.clients, args.seconds)}


def table(results: dict) -> str:
    lines = ["| model | face | round trip p50 / p95 (ms) | server decode + PNG p50 / p95 (ms) | PNG |",
             "|---|---|---:|---:|---:|"]
    for model, result in results.items():
        r = result["decode alone"]
        lines.append(f"| {model} | baseline: `model.decode` alone, in process | {r['p50_ms']:.1f} / {r['p95_ms']:.1f} "
                     "| | |")
        for face in ("test face", "prior sample"):
            r = result[face]
            lines.append(f"| {model} | {face} | {r['p50_ms']:.1f} / {r['p95_ms']:.1f} | "
                         f"{r['server_p50_ms']:.1f} / {r['server_p95_ms']:.1f} | {r['png_bytes'] / 1024:.1f} KiB |")
    lines += ["", "| model | concurrent clients | requests/s | round trip p50 / p95 (ms) |", "|---|---:|---:|---:|"]
    for model, result in results.items():
        c = result["concurrent"]
        lines.append(f"| {model} | {c['clients']} | {c['requests_per_s']:.0f} | {c['p50_ms']:.1f} / {c['p95_ms']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="keep data and runs here (default: a temporary folder)")
    parser.add_argument("--n", type=int, default=400, help="synthetic faces to train on")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per latency figure")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the concurrent run")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        data = ensure_data(work, args.n)
        runs = {name: ensure_run(data, work / f"run{i}", flags) for i, (name, flags) in enumerate(MODELS.items())}
        results = {name: measure(run, args) for name, run in runs.items()}
    print(f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
