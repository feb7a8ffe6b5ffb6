"""Disentanglement-metric benchmark: the whole suite on 10,000 codes.

Array metrics (MIG, DCI, SAP, modularity/explicitness) on 10,000 train codes and 5,000 test
codes (disentanglement_lib's sizes), D=10 code dimensions, K=5 discrete factors; the codes are a
realistic, imperfect representation: a noisy mixture of the standardised factors (each
dimension mostly one factor, with leakage from the others and Gaussian noise, plus 5 "collapsed"
dimensions of pure small noise). The sampling metrics (β-VAE and FactorVAE scores) run with
their default sizes (batch 64, 10,000 train, 5,000 eval, 10,000 for the variances) on a cheap
ground-truth object whose observations are the factors, through the same noisy mixture.

Prints a Markdown table (seconds per metric, the score, and the total) for docs/benchmarks.md.

    .venv/bin/python bench/metrics.py [--n-train 10000] [--n-test 5000] [--jobs -1]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np

FACTOR_SIZES = [3, 6, 4, 5, 2]  # shape-, scale-, hue-like factors: what faces and sprites have
CODE_DIM = 10


def mixing(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    """(K, D): dimension j < K mostly factor j, with leakage; dimensions >= K collapsed."""
    w = np.zeros((k, d))
    w[:, :k] = np.eye(k) + 0.25 * rng.normal(size=(k, k))
    return w


class NoisyEncoder:
    def __init__(self, sizes, d, seed=0):
        rng = np.random.default_rng(seed)
        self.mean = np.array([(s - 1) / 2 for s in sizes])
        self.std = np.array([np.sqrt((s * s - 1) / 12) for s in sizes])
        self.w = mixing(rng, len(sizes), d)
        self.noise = np.r_[np.full(len(sizes), 0.3), np.full(d - len(sizes), 0.01)]
        self.rng = np.random.default_rng(seed + 1)

    def __call__(self, factors):
        z = ((np.asarray(factors, np.float64) - self.mean) / self.std) @ self.w
        return z + self.noise * self.rng.normal(size=z.shape)


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and all its live descendants (Linux /proc),
    plus its reaped children: the worker processes of DCI included."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    mine, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in mine:
                mine.add(pid)
                frontier.append(pid)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(stats[p][1] for p in mine if p in stats) + reaped.ru_utime + reaped.ru_stime


def timed(fn):
    cpu = tree_cpu_seconds()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, tree_cpu_seconds() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--jobs", type=int, default=-1, help="DCI worker processes (-1: all cores)")
    args = parser.parse_args()

    from facevae.data.groundtruth import FactorsAsObservations
    from facevae.metrics import beta_vae_score, dci, factor_vae_score, mig, modularity_explicitness, sample_codes, sap

    data = FactorsAsObservations(FACTOR_SIZES)
    encode = NoisyEncoder(FACTOR_SIZES, CODE_DIM)
    rs = np.random.RandomState(0)
    c_train, f_train = sample_codes(data, encode, args.n_train, rs, batch_size=16)
    c_test, f_test = sample_codes(data, encode, args.n_test, rs, batch_size=16)

    rows = []
    t, c, r = timed(lambda: mig(c_train, f_train))
    rows.append(("MIG", t, c, f"{r['discrete_mig']:.3f}"))
    t, c, r = timed(lambda: dci(c_train, f_train, c_test, f_test, n_jobs=args.jobs))
    rows.append(("DCI (GradientBoostingClassifier, default)", t, c,
                 f"D {r['disentanglement']:.3f}, C {r['completeness']:.3f}, I {r['informativeness_test']:.3f}"))
    t, c, r = timed(lambda: sap(c_train, f_train, c_test, f_test))
    rows.append(("SAP (discrete)", t, c, f"{r['SAP_score']:.3f}"))
    t, c, r = timed(lambda: modularity_explicitness(c_train, f_train, c_test, f_test))
    rows.append(("modularity / explicitness", t, c,
                 f"M {r['modularity_score']:.3f}, E {r['explicitness_score_test']:.3f}"))
    t, c, r = timed(lambda: beta_vae_score(data, encode, np.random.RandomState(1)))
    rows.append(("β-VAE score (64 × 2 × 15,000 observations)", t, c,
                 f"train {r['train_accuracy']:.3f}, eval {r['eval_accuracy']:.3f}"))
    t, c, r = timed(lambda: factor_vae_score(data, encode, np.random.RandomState(2)))
    rows.append(("FactorVAE score (10,000 + 64 × 15,000 observations)", t, c,
                 f"train {r['train_accuracy']:.3f}, eval {r['eval_accuracy']:.3f}, {r['num_active_dims']} active"))

    total = sum(row[1] for row in rows)
    total_cpu = sum(row[2] for row in rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} at the end; "
          f"codes: {args.n_train:,} train / {args.n_test:,} test, D={CODE_DIM}, factor sizes {FACTOR_SIZES}\n")
    print("| metric | wall s | CPU s (all processes) | score |")
    print("|---|---:|---:|---|")
    for name, t, c, score in rows:
        print(f"| {name} | {t:.1f} | {c:.1f} | {score} |")
    print(f"| **total** | **{total:.1f}** (goal: ≤ 60) | {total_cpu:.1f} | |")


if __name__ == "__main__":
    main()
