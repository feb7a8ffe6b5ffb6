"""Training-engine benchmarks: images/s end to end, the model step alone, memory, quality at a budget.

For the conditional VAE that was the default until bench/time_to_quality.py chose width 1 (cvae,
width k=2, latent 64, 64x64, conditioned on all the dataset's attributes, AdamW, batch 64). Each
figure is compared with a plain baseline measured in the same run, as a ratio, because these
machines are noisy. Prints a Markdown table for docs/benchmarks.md and keeps every number in
WORKDIR/results.json.

Sub-benchmarks (--only, comma-separated; default: all but quality):

  speed    end-to-end training images/s from the packed dataset (PackedDataModule) against the
           same model fed by a per-item JPEG-decoding torch Dataset (2 DataLoader workers)
  model    the model step alone on synthetic tensors: eager, channels_last, torch.compile
           (compile time apart), torch.compile as `facevae train --compile` applies it; the
           FLOPs per image of forward+backward and this CPU's fp32 matmul rate
  memory   peak memory of training from packed datasets of 50,000 and 200,000 images, each in a
           fresh process: ru_maxrss (counts memory-mapped file pages) and peak RssAnon (does not)
  quality  `facevae train` on 50,000 synthetic faces for a fixed wall-clock budget (default 10
           minutes): test bits/dim, reconstruction error; against simple baselines
  gpu      bf16-mixed + channels_last + torch.compile, training set resident on the GPU, batch
           256 and 1024; prints "no GPU" and skips without one

    .venv/bin/python bench/train.py                      # speed, model, memory, gpu (~20 min on 2 cores)
    .venv/bin/python bench/train.py --only quality       # ~11 min: run it in the background
    .venv/bin/python bench/train.py --only speed --steps 10 --warmup 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch._dynamo

from baselines import JpegFolderDataset  # bench/ is on sys.path when a bench script runs
from facevae.models.likelihoods import bits_per_dim

ALL = ("speed", "model", "memory", "quality", "gpu")
DEFAULT_ONLY = "speed,model,memory,gpu"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# --- the model under test -------------------------------------------------------------------------

def default_cvae(attribute_names: list[str], seed: int = 0):
    """The former default CVAE, as the speed figures were first taken on it: width 2, latent 64, 64x64, every
    attribute as the condition."""
    from facevae.models import ModelConfig, build_model

    torch.manual_seed(seed)
    return build_model(ModelConfig(model="cvae", width=2, latent_dim=64, image_size=64,
                                   condition_names=list(attribute_names)))


def make_step(model, loss_fn=None, lr: float = 1e-3):
    """One training step: loss, backward, AdamW step; ``loss_fn(x, c)`` defaults to model.loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    loss_fn = loss_fn or (lambda x, c: model.loss(x, c)["loss"])

    def step(x, c):
        loss = loss_fn(x, c)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def interleaved(contestants: dict, steps: int, warmup: int, rounds: int = 3) -> dict:
    """Images/s of each ``name: (step, batches)`` over ``steps`` steps after ``warmup`` steps.

    The timed steps are dealt out in ``rounds`` rounds that visit every contestant in turn, so a
    change in the machine's load (shared machines) falls on all of them alike. Batch fetching is
    inside the timing.
    """
    its = {name: iter(batches) for name, (_, batches) in contestants.items()}
    for name, (step, _) in contestants.items():
        for _ in range(warmup):
            step(*next(its[name]))
    seconds = dict.fromkeys(contestants, 0.0)
    seen = dict.fromkeys(contestants, 0)
    per_round = [steps // rounds + (1 if i < steps % rounds else 0) for i in range(rounds)]
    for k in per_round:
        for name, (step, _) in contestants.items():
            start = time.perf_counter()
            for _ in range(k):
                x, c = next(its[name])
                step(x, c)
                seen[name] += len(x)
            seconds[name] += time.perf_counter() - start
    return {name: seen[name] / seconds[name] for name in contestants}


def forever(loader):
    while True:
        yield from loader


def packed_batches(dm):
    """PackedDataModule's train loader → prepare_batch, as the Lightning hook does it."""
    for batch in forever(dm.train_dataloader()):
        yield dm.prepare_batch(batch, train=True)


def synthetic_batches(batch_size: int, num_conditions: int, memory_format=torch.contiguous_format):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, 64, 64, generator=g).contiguous(memory_format=memory_format)
    c = torch.randint(0, 2, (batch_size, num_conditions), generator=g).float()
    while True:
        yield x, c


# --- data sets ------------------------------------------------------------------------------------

def ensure_fake_celeba(work: Path, n: int) -> tuple[Path, Path]:
    """A fake CelebA folder of ``n`` JPEGs and its packed (prepared) twin; reused when present."""
    from facevae.data.fake_celeba import write_fake_celeba
    from facevae.data.prepare import PrepareOptions, prepare_celeba

    src, packed = work / f"fake_celeba_{n}", work / f"fake_celeba_{n}_packed"
    if not (src / "list_attr_celeba.txt").exists():
        write_fake_celeba(src, n, seed=0, progress=False)
    if not (packed / "meta.json").exists():
        shutil.rmtree(packed, ignore_errors=True)
        prepare_celeba(src, packed, PrepareOptions(size=64), progress=False)
    return src, packed


def ensure_synthetic(work: Path, n: int) -> Path:
    """A packed synthetic data set of ``n`` 64x64 faces (the official-like partition); reused."""
    from facevae.data.synthetic import write_synthetic_packed

    out = work / f"synth_{n}"
    if not (out / "meta.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        print(f"rendering {n:,} synthetic faces into {out} ...", file=sys.stderr, flush=True)
        write_synthetic_packed(out, n, size=64, seed=0, progress=False)
    return out


# --- 1. end to end --------------------------------------------------------------------------------

def bench_speed(work: Path, n: int, steps: int, warmup: int, batch_size: int, rounds: int = 3) -> dict:
    from facevae.data.datamodule import PackedDataModule

    src, packed = ensure_fake_celeba(work, n)
    dm = PackedDataModule(packed, split="official", batch_size=batch_size, num_workers=0)
    dm.setup("fit")
    names = dm.attribute_names
    jpeg_ds = JpegFolderDataset(src)
    assert jpeg_ds.attribute_names == names, "the JPEG folder and the packed set disagree on attributes"
    # prefetch_factor=1: while the packed contestant's steps are timed, the JPEG workers can only get
    # 2 batches ahead, so the JPEG rounds start with little free, already-decoded data.
    jpeg = torch.utils.data.DataLoader(jpeg_ds, batch_size=batch_size, shuffle=True, num_workers=2,
                                       persistent_workers=True, prefetch_factor=1)
    r = interleaved({"packed": (make_step(default_cvae(names)), packed_batches(dm)),
                     "jpeg": (make_step(default_cvae(names)), forever(jpeg))}, steps, warmup, rounds)
    del jpeg  # stops the workers
    return {
        "speed_images": n, "speed_steps": steps, "speed_warmup": warmup, "batch_size": batch_size,
        "speed_rounds": rounds,
        "train_packed_img_s": r["packed"],
        "train_jpeg_img_s": r["jpeg"],
        "train_packed_vs_jpeg": r["packed"] / r["jpeg"],
        "attribute_names": names,
    }


# --- 2. the model step alone ----------------------------------------------------------------------

def _dynamo_graphs() -> int:
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 - an internal counter; absent in some versions
        return -1


def _compiled(names, batch_size: int) -> dict:
    """A compiled training step after its first (compiling) step; the error string if compiling fails."""
    model = default_cvae(names)
    compiled = torch.compile(model.loss)  # as VAEModule does for `facevae train --compile`
    step = make_step(model, lambda x, c: compiled(x, c)["loss"])
    batches = synthetic_batches(batch_size, len(names))
    graphs_before = _dynamo_graphs()
    try:
        first_s, _ = timed(lambda: step(*next(batches)))
    except Exception as exc:  # noqa: BLE001 - report, don't crash (no compiler, unsupported op, ...)
        text = str(exc).strip()
        return {"error": f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"}
    graphs = _dynamo_graphs() - graphs_before if graphs_before >= 0 else None
    return {"step": step, "batches": batches, "first_step_s": first_s, "graphs": graphs}


def flops_per_image(names, batch_size: int = 8) -> float:
    """Forward + backward FLOPs (2 per multiply-add, convolutions and matmuls) per image."""
    from torch.utils.flop_counter import FlopCounterMode

    model = default_cvae(names)
    x, c = next(synthetic_batches(batch_size, len(names)))
    with FlopCounterMode(display=False) as counter:
        model.loss(x, c)["loss"].backward()
    return counter.get_total_flops() / batch_size


def matmul_rate(device: str = "cpu", dtype=torch.float32, n: int = 2048, repeats: int = 10) -> float:
    """Measured FLOP/s of one big square matmul (2n³ per product)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.matmul(a, b)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def bench_model(names, steps: int, warmup: int, batch_size: int, compile_: bool = True, rounds: int = 3) -> dict:
    # A cold compile: Inductor's on-disk caches (FX graphs, kernels) would make a second run's
    # "compile time" a cache read. A fresh cache folder per run, unless the caller chose one.
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="facevae-bench-inductor-")
    torch._dynamo.reset()
    contestants = {
        "eager": (make_step(default_cvae(names)), synthetic_batches(batch_size, len(names))),
        "channels_last": (make_step(default_cvae(names).to(memory_format=torch.channels_last)),
                          synthetic_batches(batch_size, len(names), torch.channels_last)),
    }
    compiled = {}
    if compile_:
        compiled["loss"] = c = _compiled(names, batch_size)
        if "error" not in c:
            contestants["compile_loss"] = (c.pop("step"), c.pop("batches"))
    r = interleaved(contestants, steps, warmup, rounds)
    eager = r["eager"]
    out = {"model_eager_img_s": eager, "model_channels_last_img_s": r["channels_last"],
           "model_channels_last_ratio": r["channels_last"] / eager, "model_rounds": rounds}
    for how, c in compiled.items():
        if "error" not in c:
            c |= {"img_s": r[f"compile_{how}"], "ratio": r[f"compile_{how}"] / eager,
                  "compile_s": max(c["first_step_s"] - batch_size / eager, 0.0)}
        out[f"compile_{how}"] = c
    flops = flops_per_image(names)
    rate = matmul_rate("cpu", torch.float32)
    out |= {"flops_per_image": flops, "cpu_matmul_flop_s": rate, "cpu_limit_img_s": rate / flops,
            "cpu_utilisation": eager / (rate / flops)}
    return out


# --- 3. memory ------------------------------------------------------------------------------------

def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of this process, in KiB (Linux)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


class PeakSampler:
    """Peak of each /proc/self/status field: sampled by a thread every ``interval`` s, and on demand."""

    def __init__(self, interval: float = 0.005):
        self.peak: dict[str, int] = {}
        self.interval, self._stop = interval, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, int]:
        now = proc_status()
        for k, v in now.items():
            self.peak[k] = max(self.peak.get(k, 0), v)
        return now

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def memory_child(data: str, steps: int, batch_size: int) -> dict:
    """One training run in this (fresh) process; ``data`` is a packed folder or 'none' (synthetic tensors)."""
    from facevae.data.datamodule import PackedDataModule

    start = proc_status()
    if data == "none":
        names = [f"a{i}" for i in range(17)]
        batches, n_train, file_mib = synthetic_batches(batch_size, len(names)), 0, 0.0
    else:
        dm = PackedDataModule(data, split="official", batch_size=batch_size, num_workers=0)
        dm.setup("fit")
        names, batches = dm.attribute_names, packed_batches(dm)
        n_train = len(dm.dataset("train"))
        file_mib = (Path(data) / "images.npy").stat().st_size / 2**20
    step = make_step(default_cvae(names))
    ready = proc_status()
    seconds = time.perf_counter()
    with PeakSampler() as sampler:
        it = iter(batches)
        for _ in range(steps):
            step(*next(it))
            sampler.sample()  # every step at least, whatever the thread catches in between
    seconds = time.perf_counter() - seconds
    end = proc_status()
    return {
        "data": data, "steps": steps, "batch_size": batch_size, "train_images": n_train, "images_file_mib": file_mib,
        "seconds": seconds,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "peak_anon_mib": sampler.peak.get("RssAnon", 0) / 1024,
        "peak_file_mib": sampler.peak.get("RssFile", 0) / 1024,
        "anon_at_start_mib": start.get("RssAnon", 0) / 1024,
        "anon_ready_mib": ready.get("RssAnon", 0) / 1024,
        "anon_end_mib": end.get("RssAnon", 0) / 1024,
        "file_end_mib": end.get("RssFile", 0) / 1024,
    }


def bench_memory(work: Path, sizes: list[int], steps: int, batch_size: int) -> dict:
    out = {"memory_steps": steps}
    for label, data in [("none", "none")] + [(str(n), str(ensure_synthetic(work, n))) for n in sizes]:
        proc = subprocess.run([sys.executable, __file__, "--memory-child", data, "--memory-steps", str(steps),
                               "--batch-size", str(batch_size)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child for {data} failed:\n{proc.stderr[-3000:]}")
        out[f"memory_{label}"] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"memory {label}: {out[f'memory_{label}']}", file=sys.stderr, flush=True)
    return out


# --- 4. quality at a fixed budget -----------------------------------------------------------------

def ensure_split(data: Path, strategy: str) -> str:
    from facevae.data.packed import PackedDataset
    from facevae.data.splits import split_dataset

    ds = PackedDataset(data)
    if strategy == "official" or strategy in ds.split_names():
        return strategy
    name, _ = split_dataset(ds, strategy)
    return name


def histogram_bits_per_dim(dm, max_train: int = 20_000, chunk: int = 1000) -> float:
    """Test bits/dim of independent per-sub-pixel 256-bin histograms fitted on the train part (add-one)."""
    images = dm.packed.images
    train, test = dm.indices("train")[:max_train], dm.indices("test")
    dims = int(np.prod(images.shape[1:]))
    offsets = np.arange(dims, dtype=np.int64) * 256
    counts = np.zeros(dims * 256, np.int64)
    for lo in range(0, len(train), chunk):
        block = np.asarray(images[train[lo:lo + chunk]]).reshape(-1, dims)
        counts += np.bincount((block + offsets).ravel(), minlength=dims * 256)
    logp = np.log2((counts + 1) / (len(train) + 256))
    total = 0.0
    for lo in range(0, len(test), chunk):
        block = np.asarray(images[test[lo:lo + chunk]]).reshape(-1, dims)
        total += logp[block + offsets].sum()
    return -total / (len(test) * dims)


@torch.no_grad()
def reconstruction_mse(run_dir: Path, dm, n: int = 512) -> tuple[float, float]:
    """Per-pixel MSE on [0, 255] of model.reconstruct (posterior mean) over the first n test images,
    and that of the mean training image (the baseline) over the same images."""
    import facevae

    model = facevae.load(run_dir)
    columns = model.config.condition_index(dm.attribute_names)
    train = dm.indices("train")[:20_000]
    mean = torch.from_numpy(np.asarray(dm.packed.images[train], np.float64).mean(0)).permute(2, 0, 1).float() / 255
    se_model = se_mean = 0.0
    count = 0
    for x, y in dm.batches("test", batch_size=128):
        x, y = x[: n - count], y[: n - count]
        c = y[:, columns] if columns else None
        recon = model.reconstruct(x, c)
        se_model += float(((recon - x) * 255).square().sum())
        se_mean += float(((mean - x) * 255).square().sum())
        count += len(x)
        if count >= n:
            break
    pixels = count * x[0].numel()
    return se_model / pixels, se_mean / pixels


def bench_quality(work: Path, n: int, strategy: str, max_time: str, epochs: int, eval_k: int,
                  eval_batches: int) -> dict:
    from facevae.data.datamodule import PackedDataModule

    data = ensure_synthetic(work, n)
    split = ensure_split(data, strategy)
    run_dir = work / "quality_cvae"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "facevae", "train", "--data", str(data), "--split", split, "--model", "cvae",
           "--run-dir", str(run_dir), "--epochs", str(epochs), "--max-time", max_time, "--eval-k", str(eval_k),
           "--eval-batches", str(eval_batches), "--no-progress"]
    print("quality: " + " ".join(cmd), file=sys.stderr, flush=True)
    log = work / "quality_train.log"
    with open(log, "w") as f:
        wall, proc = timed(lambda: subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT))
    if proc.returncode != 0:
        raise RuntimeError(f"facevae train failed (rc {proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics.get("test", {})
    dm = PackedDataModule(data, split=split, batch_size=128)
    mse, mse_mean = reconstruction_mse(run_dir, dm)
    hist_bpd = histogram_bits_per_dim(dm)
    return {
        "quality_command": " ".join(["facevae"] + cmd[3:]), "quality_split": split, "quality_images": n,
        "quality_eval_k": eval_k,
        "quality_wall_s": wall, "quality_train_s": metrics.get("train_seconds"),
        "quality_steps": metrics.get("global_step"), "quality_epochs": len(metrics.get("epochs", [])),
        "quality_best_epoch": metrics.get("best_epoch"),
        "test_bits_per_dim": test.get("test_bits_per_dim"), "test_bits_per_dim_iw": test.get("test_bits_per_dim_iw"),
        "test_recon": test.get("test_recon"), "test_kl": test.get("test_kl"), "iw_images": test.get("iw_images"),
        "recon_mse_255": mse, "mean_image_mse_255": mse_mean, "histogram_bits_per_dim": hist_bpd,
    }


# --- GPU ------------------------------------------------------------------------------------------

def bench_gpu(work: Path, names, batch_sizes=(256, 1024), steps: int = 50, warmup: int = 10,
              device: str = "cuda", compile_: bool = True, data_images: int = 50_000) -> dict:
    """bf16-mixed, channels_last, torch.compile, training set resident on the device; images/s and
    the arithmetic limit (measured bf16 matmul rate / FLOPs per image)."""
    if device == "cuda" and not torch.cuda.is_available():
        return {"gpu": "no GPU"}
    from facevae.data.datamodule import PackedDataModule

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    dm = PackedDataModule(ensure_synthetic(work, data_images), split="official", batch_size=max(batch_sizes))
    ds = dm.dataset("train")
    names = dm.attribute_names
    parts = [ds.__getitems__(np.arange(lo, min(lo + 8192, len(ds)))) for lo in range(0, len(ds), 8192)]
    images = torch.cat([p[0].contiguous() for p in parts]).to(dev)  # uint8 (n, 3, 64, 64) on the device
    attributes = torch.cat([p[1] for p in parts]).to(dev)
    del parts
    out = {"gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev), "gpu_train_images": len(images),
           "gpu_compile": compile_}
    flops = flops_per_image(names)
    rate = matmul_rate(device, torch.bfloat16, n=8192 if dev.type == "cuda" else 1024)
    out |= {"gpu_bf16_matmul_flop_s": rate, "gpu_limit_img_s": rate / flops}
    for bs in batch_sizes:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        torch._dynamo.reset()
        model = default_cvae(names).to(dev, memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=dev.type == "cuda")
        loss_fn = (lambda x, c: model.loss(x, c)["loss"])
        if compile_:
            loss_fn = torch.compile(loss_fn)
        g = torch.Generator(device=dev).manual_seed(0)

        def step():
            idx = torch.randint(0, len(images), (bs,), device=dev, generator=g)
            x = images[idx].float().div_(255).contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                loss = loss_fn(x, attributes[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        first_s, _ = timed(lambda: (step(), sync()))
        for _ in range(warmup - 1):
            step()
        sync()
        seconds, _ = timed(lambda: ([step() for _ in range(steps)], sync()))
        out[f"gpu_batch_{bs}"] = {"img_s": bs * steps / seconds, "first_step_s": first_s,
                             "utilisation": bs * steps / seconds / (rate / flops),
                             "peak_mem_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None}
    return out


# --- report ---------------------------------------------------------------------------------------

def machine_line() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch "
            f"threads, Python {platform.python_version()}, torch {torch.__version__}"
            + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"))


def table(r: dict) -> str:
    rows = ["| figure | value | baseline (same run) | ratio |", "|---|---|---|---|"]
    add = rows.append
    bs = r.get("batch_size", 64)
    if "train_packed_img_s" in r:
        add(f"| train end to end, packed dataset (PackedDataModule → prepare_batch → loss → backward → AdamW), "
            f"CVAE k=2, batch {bs}, {r['speed_steps']} steps after {r['speed_warmup']}, interleaved | {r['train_packed_img_s']:,.1f} img/s "
            f"| per-item JPEG-decoding Dataset, 2 workers: {r['train_jpeg_img_s']:,.1f} img/s "
            f"| {r['train_packed_vs_jpeg']:.2f}x |")
    if "model_eager_img_s" in r:
        if "train_packed_img_s" in r:
            add(f"| train end to end from the packed dataset, against the model step alone | "
                f"{r['train_packed_img_s']:,.1f} img/s | model step on synthetic tensors: {r['model_eager_img_s']:,.1f} img/s "
                f"| {r['train_packed_img_s'] / r['model_eager_img_s']:.2f}x |")
        add(f"| model step alone, channels_last, batch {bs} | {r['model_channels_last_img_s']:,.1f} img/s "
            f"| eager, contiguous: {r['model_eager_img_s']:,.1f} img/s | {r['model_channels_last_ratio']:.2f}x |")
        for how, label in (("loss", "torch.compile(model.loss), as `facevae train --compile`"),):
            c = r.get(f"compile_{how}")
            if c is None:
                continue
            if "error" in c:
                add(f"| model step alone, {label} | failed: `{c['error']}` | | |")
                continue
            graphs = "" if c.get("graphs") is None else f", {c['graphs']} graph(s) compiled"
            add(f"| model step alone, {label}, steady state | {c['img_s']:,.1f} img/s "
                f"| eager: {r['model_eager_img_s']:,.1f} img/s | {c['ratio']:.2f}x |")
            add(f"| compile time, {label} (first step − an eager step) | {c['compile_s']:.1f} s{graphs} | | |")
        add(f"| FLOPs per image, CVAE forward + backward (conv + matmul, FlopCounterMode) | "
            f"{r['flops_per_image'] / 1e9:.3f} GFLOP | | |")
        add(f"| CPU arithmetic limit: fp32 matmul rate / FLOPs per image | {r['cpu_limit_img_s']:,.0f} img/s "
            f"({r['cpu_matmul_flop_s'] / 1e9:,.0f} GFLOP/s) | eager model step: {r['model_eager_img_s']:,.1f} img/s "
            f"| {r['cpu_utilisation']:.2f} of the limit |")
    if "memory_none" in r:
        base = r["memory_none"]
        sizes = sorted((int(k.split("_")[1]) for k in r if k.startswith("memory_") and k.split("_")[1].isdigit()))
        prev = None
        for n in sizes:
            m = r[f"memory_{n}"]
            ref, ref_name = (base, "no data set (synthetic tensors)") if prev is None else (r[f"memory_{prev}"], f"{prev:,} images")
            add(f"| peak anonymous memory (RssAnon), {m['steps']} steps, {n:,} images "
                f"({m['images_file_mib']:,.0f} MiB file) | {m['peak_anon_mib']:,.0f} MiB "
                f"| {ref_name}: {ref['peak_anon_mib']:,.0f} MiB | {m['peak_anon_mib'] / ref['peak_anon_mib']:.2f}x |")
            add(f"| ru_maxrss (counts mapped file pages), {n:,} images | {m['ru_maxrss_mib']:,.0f} MiB "
                f"| {ref_name}: {ref['ru_maxrss_mib']:,.0f} MiB | {m['ru_maxrss_mib'] / ref['ru_maxrss_mib']:.2f}x |")
            add(f"| peak file-backed RSS (RssFile), {n:,} images | {m['peak_file_mib']:,.0f} MiB "
                f"| {ref_name}: {ref['peak_file_mib']:,.0f} MiB | {m['peak_file_mib'] / ref['peak_file_mib']:.2f}x |")
            prev = n
    if "test_bits_per_dim" in r:
        add(f"| budget run: `facevae train` cvae, {r['quality_images']:,} synthetic faces, {r['quality_split']} split "
            f"| {r['quality_epochs']} epochs, {r['quality_steps']:,} steps in {r['quality_train_s']:.0f} s "
            f"(wall {r['quality_wall_s']:.0f} s with test evaluation) | | |")
        h = r["histogram_bits_per_dim"]
        add(f"| test bits/dim (ELBO bound) | {r['test_bits_per_dim']:.3f} "
            f"| independent per-sub-pixel histograms: {h:.3f} | {r['test_bits_per_dim'] / h:.2f}x |")
        if r.get("test_bits_per_dim_iw") is not None:
            add(f"| test bits/dim, importance-weighted (k={r.get('quality_eval_k', '?')}, {r['iw_images']} images) | {r['test_bits_per_dim_iw']:.3f} "
                f"| independent per-sub-pixel histograms: {h:.3f} | {r['test_bits_per_dim_iw'] / h:.2f}x |")
        add(f"| test reconstruction term −log p(x|z) | {r['test_recon']:,.0f} nats/image "
            f"({float(bits_per_dim(-r['test_recon'], 12288)):.3f} bits/dim); KL {r['test_kl']:.1f} nats | | |")
        add(f"| reconstruction MSE on [0, 255], posterior mean, 512 test images | {r['recon_mse_255']:.1f} "
            f"| mean training image: {r['mean_image_mse_255']:.1f} | {r['recon_mse_255'] / r['mean_image_mse_255']:.3f}x |")
    if "gpu" in r:
        if r["gpu"] == "no GPU":
            add("| GPU (bf16-mixed, channels_last, compile, data on device) | no GPU: skipped | | |")
        else:
            add(f"| GPU bf16 matmul rate; arithmetic limit | {r['gpu_bf16_matmul_flop_s'] / 1e12:.0f} TFLOP/s; "
                f"{r['gpu_limit_img_s']:,.0f} img/s | | |")
            for k in sorted((k for k in r if k.startswith("gpu_batch_")), key=lambda k: int(k[10:])):
                g = r[k]
                add(f"| GPU train, {r['gpu']}, batch {k[10:]}, bf16-mixed + channels_last"
                    f"{' + compile' if r.get('gpu_compile') else ''}, data on device "
                    f"| {g['img_s']:,.0f} img/s | arithmetic limit {r['gpu_limit_img_s']:,.0f} img/s "
                    f"| {g['utilisation']:.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=DEFAULT_ONLY, help=f"comma-separated of {','.join(ALL)} or 'all' "
                        f"(default {DEFAULT_ONLY})")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/facevae-bench-train"),
                        help="data sets and runs go here and are reused")
    parser.add_argument("--n", type=int, default=4000, help="fake CelebA JPEGs for the speed comparison")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per speed / model figure")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3,
                        help="the timed steps of compared figures are interleaved in this many rounds")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile figures")
    parser.add_argument("--memory-sizes", default="50000,200000", help="packed synthetic data set sizes")
    parser.add_argument("--memory-steps", type=int, default=200, help="training steps per memory run")
    parser.add_argument("--quality-n", type=int, default=50_000)
    parser.add_argument("--quality-split", default="stratified", help="official, random or stratified")
    parser.add_argument("--max-time", default="00:00:10:00", help="quality budget, DD:HH:MM:SS")
    parser.add_argument("--quality-epochs", type=int, default=100, help="more than fit in --max-time")
    parser.add_argument("--eval-k", type=int, default=100)
    parser.add_argument("--eval-batches", type=int, default=4)
    parser.add_argument("--gpu-batch-sizes", default="256,1024")
    parser.add_argument("--report", action="store_true",
                        help="measure nothing: print the table of everything in WORKDIR/results.json")
    parser.add_argument("--memory-child", metavar="DATA", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.report:
        stored = json.loads((args.workdir / "results.json").read_text())
        print(f"machine: {stored.get('machine', '?')}\n")
        print(table(stored))
        return

    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.memory_steps, args.batch_size)))
        return
    only = set(ALL) if args.only == "all" else {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(ALL)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    args.workdir.mkdir(parents=True, exist_ok=True)

    r: dict = {"machine": machine_line(), "batch_size": args.batch_size, "argv": sys.argv[1:],
               "date": time.strftime("%Y-%m-%d %H:%M")}
    names = None
    if "speed" in only:
        r |= bench_speed(args.workdir, args.n, args.steps, args.warmup, args.batch_size, args.rounds)
        names = r["attribute_names"]
    if "model" in only or "gpu" in only:
        if names is None:
            from facevae.data.packed import PackedDataset

            names = PackedDataset(ensure_fake_celeba(args.workdir, args.n)[1]).attribute_names
    if "model" in only:
        r |= bench_model(names, args.steps, args.warmup, args.batch_size, compile_=not args.no_compile,
                        rounds=args.rounds)
    if "memory" in only:
        r |= bench_memory(args.workdir, [int(s) for s in args.memory_sizes.split(",")], args.memory_steps,
                          args.batch_size)
    if "quality" in only:
        r |= bench_quality(args.workdir, args.quality_n, args.quality_split, args.max_time, args.quality_epochs,
                           args.eval_k, args.eval_batches)
    if "gpu" in only:
        r |= bench_gpu(args.workdir, names, tuple(int(b) for b in args.gpu_batch_sizes.split(",")),
                       compile_=not args.no_compile)
        if r["gpu"] == "no GPU":
            if "model" not in only:  # the FLOPs per image are hardware independent: give them anyway
                r["flops_per_image_only"] = flops_per_image(names)
            print("no GPU: GPU benchmark skipped", file=sys.stderr)

    results = args.workdir / "results.json"
    stored = json.loads(results.read_text()) if results.exists() else {}
    stored.update({k: v for k, v in r.items() if k != "attribute_names"})
    results.write_text(json.dumps(stored, indent=1, default=str))
    print(f"machine: {r['machine']}\n")
    print(table(r))
    if "flops_per_image_only" in r:
        print(f"\nFLOPs per image, CVAE forward + backward: {r['flops_per_image_only'] / 1e9:.3f} GFLOP")


if __name__ == "__main__":
    main()
