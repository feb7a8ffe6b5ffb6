"""Train a model of the VAE family into a run directory; resume one; export and load its weights.

A run directory holds::

    config.yaml              the full RunConfig (model + training) that made it
    checkpoints/last.ckpt    refreshed every few steps and at each epoch end (what --resume uses)
    checkpoints/best.ckpt    the best validation ELBO so far (never a non-finite one)
    model.safetensors        the best weights, for loading without Lightning or pickle
    model.json               model config + the attribute names the condition columns refer to
    logs/                    CSV and TensorBoard logs
    figures/epoch_NNN.png    reconstructions and samples after each epoch
    metrics.json             per-epoch validation numbers, best epoch, test evaluation
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
import time
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
    WeightAveraging,
)
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from facevae.common.errors import FileWriteError, RunError
from facevae.common.files import make_dir, remove_stale_temporaries, write_json_atomic
from facevae.common.lock import hold
from facevae.common.signals import Interrupted, default_sigterm, signal_name
from facevae.data.datamodule import PackedDataModule
from facevae.models import build_model
from facevae.models.base import VAEBase
from facevae.models.config import ModelConfig
from facevae.models.likelihoods import bits_per_dim
from facevae.training.callbacks import BatchRecorder, EpochFigures, MetricsFile, RandomState
from facevae.training.checkpoints import (
    AtomicCheckpointIO,
    check_complete,
    export_weights,
    read_exported,
    reexport_fix,
    safe_load,
)
from facevae.training.config import CLASSIFIER_KIND, RunConfig, resolve_precision
from facevae.training.console import lightning_quiet
from facevae.training.logs import ResumableCSVLogger
from facevae.training.module import VAEModule


def _devices(text: str):
    if text == "auto":
        return "auto"
    return [int(d) for d in text.split(",") if d != ""] if "," in text else int(text)


def make_datamodule(config: RunConfig) -> PackedDataModule:
    t = config.train
    return PackedDataModule(t.data, split=t.split, batch_size=t.batch_size, num_workers=t.num_workers,
                            flip=t.flip, on_device=t.on_device, image_size=config.model.image_size, seed=t.seed)


def warmup_ema(decay: float):
    """EMA update whose decay grows as (1 + n) / (10 + n) up to ``decay`` (n: updates so far), as in
    TensorFlow's ExponentialMovingAverage with num_updates: a fixed 0.999 would leave a run of a few
    hundred steps averaging mostly its untrained start."""

    @torch.no_grad()
    def update(averaged: list, current: list, n) -> None:
        n = int(n)  # one host sync per step, not per tensor
        d = min(decay, (1 + n) / (10 + n))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1 - d)
        else:  # integer buffers (BatchNorm's batch counter): keep the current value
            torch._foreach_copy_(averaged, current)

    return update


class WeightsEMA(WeightAveraging):
    """Validation ELBO swings from step to step; the average is what gets validated, checkpointed as
    state_dict (the raw weights ride along as current_model_state, for --resume) and exported."""

    def __init__(self, decay: float):
        super().__init__(multi_avg_fn=warmup_ema(decay))

    def on_train_end(self, trainer, pl_module):
        # Lightning would copy the average into the live weights here, before the final last.ckpt is
        # written, so a later --resume would continue from the average. Export reads best.ckpt instead.
        pass


def lightning_trainer(t, run_dir: Path, monitor: str | None, mode: str, callbacks=(), **overrides) -> L.Trainer:
    """The Trainer every facevae run uses (``t``: a TrainConfig, or any config with its fields).

    best.ckpt by ``monitor`` and last.ckpt, both written atomically; early stopping that also stops
    on a non-finite monitor; CSV and TensorBoard logs; an EMA of the weights when ``t.ema`` > 0.
    ``monitor`` None: last.ckpt only, no early stopping (the callbacks given keep what is best).
    """
    def last_ckpt(**trigger):
        return ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=0, save_last=True,
                               enable_version_counter=False, **trigger)

    # A step-triggered ModelCheckpoint writes nothing at an epoch's end: a finished run's last.ckpt would lag
    # its last step. So one writes last.ckpt at every epoch's end, and another every so many steps within.
    last = [last_ckpt(every_n_epochs=1)]
    if t.checkpoint_every_steps:
        last.append(last_ckpt(every_n_train_steps=t.checkpoint_every_steps))
    best = [] if monitor is None else [ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best",
                                                       monitor=monitor, mode=mode, save_top_k=1, save_last=False,
                                                       enable_version_counter=False)]
    callbacks = [*best, *last, *callbacks, LearningRateMonitor("epoch"), RandomState()]
    if getattr(t, "ema", 0.0):
        callbacks.append(WeightsEMA(decay=t.ema))
    if t.patience > 0 and monitor is not None:
        # check_finite: a NaN validation metric stops the run instead of waiting out the patience.
        callbacks.append(EarlyStopping(monitor, mode=mode, patience=t.patience, check_finite=True))
    if t.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    if os.environ.get("FACEVAE_RECORD_BATCHES"):
        callbacks.append(BatchRecorder(Path(os.environ["FACEVAE_RECORD_BATCHES"])))
    # Flushed as often as last.ckpt is written, so a killed run keeps the log of what it resumes from.
    loggers = [ResumableCSVLogger(run_dir / "logs", name="", version="csv",
                                  flush_logs_every_n_steps=t.checkpoint_every_steps or 100),
               TensorBoardLogger(run_dir / "logs", name="", version="tensorboard", default_hp_metric=False)]
    return L.Trainer(
        default_root_dir=run_dir, max_epochs=t.epochs, accelerator=t.accelerator, devices=_devices(t.devices),
        num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision, callbacks=callbacks, logger=loggers,
        plugins=[AtomicCheckpointIO()], gradient_clip_val=t.gradient_clip or None,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches, max_time=t.max_time,
        enable_progress_bar=t.progress, enable_model_summary=t.progress, deterministic="warn" if t.seed is not None else False,
        log_every_n_steps=10,
        # the datamodule's samplers shard by rank themselves, so that the training one can resume mid-epoch
        use_distributed_sampler=False, **overrides,
    )


def check_accelerator(accelerator: str, devices: str = "auto") -> None:
    """A one-line ValueError, before a run directory is made, for an accelerator (or a device count) this machine
    lacks: Lightning says so only once its Trainer is built, as a MisconfigurationException traceback."""
    from lightning.pytorch.accelerators import AcceleratorRegistry, CUDAAccelerator, MPSAccelerator

    name = accelerator.strip().lower()
    if name in ("auto", "cpu"):
        return
    known = AcceleratorRegistry.available_accelerators()
    if name == "gpu":
        kind = next((k for k in (CUDAAccelerator, MPSAccelerator) if k.is_available()), None)
    elif name in known:
        kind = AcceleratorRegistry[name]["accelerator"]
        kind = kind if kind.is_available() else None
    else:
        raise ValueError(f"--accelerator must be auto, cpu, gpu or one of {', '.join(sorted(known))}; got {accelerator!r}")
    if kind is None:
        raise ValueError(f"--accelerator {accelerator}: this machine has none (torch finds no such device); "
                         "use --accelerator cpu, or auto to take what there is")
    count = kind.auto_device_count()
    wanted = devices.strip()
    if wanted.isdigit() and int(wanted) > count:
        raise ValueError(f"--devices {wanted}: this machine has {count} {name} device(s)")


def is_launched_copy() -> bool:
    """Whether this process is one Lightning's DDP launcher started: it re-runs the command in each extra
    process, and only the first one owns the run directory."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def claim_run_dir(run_dir: Path, resume: bool) -> tuple[Path, bool]:
    """(last checkpoint, whether this process is a DDP-launched copy); refuses to overwrite or resume nothing."""
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    launched_copy = is_launched_copy()
    if resume:
        if not last_ckpt.is_file():
            raise RunError(f"{run_dir}: nothing to resume (no checkpoints/last.ckpt); it never reached its "
                               f"first checkpoint: start it again with `facevae train ... --run-dir {run_dir}`")
    elif (last_ckpt.is_file() or (run_dir / "model.safetensors").is_file()) and not launched_copy:
        raise RunError(f"{run_dir}: already holds a run; use --resume {run_dir} to continue it, or another --run-dir")
    # A folder with a config but no checkpoint is a start that failed before its first step: start again.
    return last_ckpt, launched_copy


@contextmanager
def holding_run_dir(run_dir: Path, resume: bool, what: str = "training") -> Iterator[tuple[Path, bool]]:
    """The run directory made, held against a second writer for the block, and claimed (see claim_run_dir);
    temporaries that killed writes left in it are removed."""
    if resume:
        claim_run_dir(run_dir, resume)  # before anything is made: a mistyped RUN is not created
    make_dir(run_dir)
    if is_launched_copy():  # the first process holds the folder for all of them
        yield claim_run_dir(run_dir, resume)
        return
    with hold(run_dir, what=what):
        claimed = claim_run_dir(run_dir, resume)  # again: another writer may have finished meanwhile
        for folder in (run_dir, run_dir / "checkpoints"):
            for path in remove_stale_temporaries(folder):
                print(f"facevae: note: removed {path}, left by a write that was killed", file=sys.stderr)
        yield claimed


def check_resumable(run_dir: Path) -> None:
    """A one-line RunError unless ``run_dir``'s checkpoints can be resumed from (cheap: no checkpoint is read)."""
    checkpoints = run_dir / "checkpoints"
    last, best = checkpoints / "last.ckpt", checkpoints / "best.ckpt"
    best_complete = best.is_file() and best.stat().st_size > 0 and zipfile.is_zipfile(best)
    check_complete(last, fix=("continue from the best epoch instead: copy checkpoints/best.ckpt over "
                              "checkpoints/last.ckpt and resume again" if best_complete else
                              "the run cannot be continued: start it again in a new --run-dir"))
    if best.is_file():
        check_complete(best, fix="the best epoch's weights are lost with it (model.safetensors keeps them if the "
                                 "run finished); copy checkpoints/last.ckpt over it to continue, and the export "
                                 "will be of the last epoch, or start again in a new --run-dir")


class TrainingInterrupted(Interrupted):
    """Ctrl-C or SIGTERM stopped a training; the last checkpoint is kept and the message says how to go on."""

    def __init__(self, signum: int, run_dir: Path, trainer: L.Trainer | None = None, command: str = "facevae train"):
        where = f" at epoch {trainer.current_epoch}, step {trainer.global_step}" if trainer is not None else ""
        if (run_dir / "checkpoints" / "last.ckpt").is_file():
            how = f"its last checkpoint is kept: continue with `{command} --resume {run_dir}`"
        else:
            how = "before its first checkpoint: start it again with the same command"
        super().__init__(signum, f"{run_dir}: stopped by {signal_name(signum)}{where}; {how}")
        self.run_dir = run_dir


def fit(trainer: L.Trainer, module, datamodule, ckpt_path: Path | None, run_dir: Path,
        command: str = "facevae train") -> None:
    """trainer.fit, its stops said as facevae says them: Lightning ends a SIGTERM with SystemExit(0) and
    Ctrl-C with SystemExit(1), both of which would read as a finished or failed run."""
    try:
        with warnings.catch_warnings(), default_sigterm():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # deliberate: few or none
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:
        raise TrainingInterrupted(signal.SIGTERM, run_dir, trainer, command) from None
    except SystemExit:
        if trainer.interrupted:
            raise TrainingInterrupted(signal.SIGINT, run_dir, trainer, command) from None
        raise
    except FileWriteError as exc:
        raise FileWriteError(f"{exc.problem}; the last good checkpoint is kept: once it can be written, continue "
                             f"with `{command} --resume {run_dir}`", exc.errno, exc.filename) from None


def train(config: RunConfig, resume: bool = False, callbacks=()) -> dict:
    """Fit, keep the best checkpoint, export it, evaluate it on the test split; returns metrics.

    ``callbacks``: extra Lightning callbacks (a sweep's pruning hook), run after the built-in ones.
    """
    run_dir = Path(config.train.run_dir)
    check_accelerator(config.train.accelerator, config.train.devices)
    with holding_run_dir(run_dir, resume) as (last_ckpt, launched_copy):
        if resume:
            check_resumable(run_dir)
        return _train_held(config, run_dir, last_ckpt if resume else None, launched_copy, callbacks)


def seeded_datamodule(config: RunConfig, run_dir: Path, save: bool = True) -> PackedDataModule:
    """Torch seeded with the run's seed, its data, and ``config`` completed from the data (and saved, if
    ``save``): the model built next gets the weights the seed gives."""
    t = config.train
    t.data = str(Path(t.data).resolve())  # the run can then be opened, resumed or moved from any folder
    t.precision = resolve_precision(t.precision, t.accelerator)  # config.yaml says what "auto" chose
    L.seed_everything(t.seed, workers=True, verbose=False)
    datamodule = make_datamodule(config)
    stored_channels = datamodule.stored_image_shape[0]
    if config.model.channels != stored_channels:  # before the sanity step's conv error, which names no flag
        raise ValueError(f"--channels {config.model.channels}: {t.data} holds images of {stored_channels} channels "
                         f"(packed datasets are RGB, black-and-white ones too); leave --channels at "
                         f"{stored_channels}")
    if config.model.is_conditional and not config.model.condition_names:
        config.model.condition_names = datamodule.attribute_names
    if config.model.loss == "tcvae" and not config.model.dataset_size:
        config.model.dataset_size = len(datamodule.indices("train"))  # N of the minibatch-weighted estimate
    config.model.condition_index(datamodule.attribute_names)  # fails early on unknown attribute names
    if save:
        config.save(run_dir / "config.yaml")
    return datamodule


def _train_held(config: RunConfig, run_dir: Path, resume_from: Path | None, launched_copy: bool, callbacks) -> dict:
    t = config.train
    datamodule = seeded_datamodule(config, run_dir, save=not launched_copy)
    module = VAEModule(config.to_dict())
    module.condition_columns = config.model.condition_index(datamodule.attribute_names) or None
    metrics = MetricsFile(run_dir / "metrics.json")
    with lightning_quiet(t.verbose):
        trainer = lightning_trainer(t, run_dir, "val_elbo", "max",
                                    [EpochFigures(run_dir / "figures"), metrics, *callbacks])
        started = time.perf_counter()
        fit(trainer, module, datamodule, resume_from, run_dir)
    if not trainer.is_global_zero:
        return {}
    model = best_model(module, run_dir, "finite validation ELBO")
    before = _weights_digest(run_dir)
    export(model, run_dir, datamodule.attribute_names)
    if before is not None and before != _weights_digest(run_dir):
        _retire_old_model_results(run_dir, metrics)
    test = evaluate(model, datamodule, config)
    metrics.update(best_epoch=_best_epoch(metrics.data), best_val_elbo=_best_val(metrics.data), test=test,
                   train_seconds=round(time.perf_counter() - started, 1), global_step=trainer.global_step,
                   **({} if module.guard is None else {"skipped_updates": module.guard.skipped}))
    return metrics.data


def _weights_digest(run_dir: Path) -> str | None:
    path = run_dir / "model.safetensors"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


RETIRED = "analysis.earlier-model"  # what described the model a longer training replaced


def _retire_old_model_results(run_dir: Path, metrics: MetricsFile) -> None:
    """Training longer exported another model: its analysis and disentanglement scores described the one before,
    and the report would show them as this one's. They move to RUN/analysis.earlier-model (the one before goes)."""
    retired, scores = run_dir / RETIRED, metrics.data.pop("disentanglement", None)
    if not (run_dir / "analysis").is_dir() and scores is None:
        return
    shutil.rmtree(retired, ignore_errors=True)
    if (run_dir / "analysis").is_dir():
        os.replace(run_dir / "analysis", retired)
    if scores is not None:
        write_json_atomic(make_dir(retired) / "disentanglement.json", scores)
        metrics.update()
    print(f"facevae: note: the exported model changed, so the analysis and scores of the earlier one moved to "
          f"{retired}; `facevae report {run_dir}` and `facevae metrics {run_dir}` compute them again", file=sys.stderr)


def best_model(module, run_dir: Path, monitored: str) -> torch.nn.Module:
    """``module.model`` with the weights of checkpoints/best.ckpt (the model's own keys, under ``model.``)."""
    best_path = run_dir / "checkpoints" / "best.ckpt"
    if not best_path.is_file():
        raise RunError(f"{run_dir}: training ended without a {monitored}; no model to export")
    state = safe_load(best_path, fix="start the run again in a new --run-dir")["state_dict"]
    module.model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return module.model


def _best_val(data: dict):
    values = [e.get("val_elbo") for e in data["epochs"] if e.get("val_elbo") is not None]
    return max(values) if values else None


def _best_epoch(data: dict):
    best = _best_val(data)
    return next((e["epoch"] for e in data["epochs"] if e.get("val_elbo") == best), None)


@torch.no_grad()
def evaluate(model: VAEBase, datamodule: PackedDataModule, config: RunConfig) -> dict:
    """Test split: ELBO, recon, KL, bits/dim, and the importance-weighted log p(x) with K samples."""
    model.eval()
    t = config.train
    columns = config.model.condition_index(datamodule.attribute_names)
    device = next(model.parameters()).device
    sums, count, iw_sum, iw_count = {}, 0, 0.0, 0
    for i, (x, y) in enumerate(datamodule.batches("test", device=device, batch_size=min(t.batch_size, 64))):
        c = y[:, columns] if columns else None
        terms = model.loss(x, c, kl_weight=1.0)
        for name in ("elbo", "recon", "kl", "bits_per_dim"):
            sums[name] = sums.get(name, 0.0) + float(terms[name]) * len(x)
        count += len(x)
        if not t.eval_batches or i < t.eval_batches:
            iw_sum += float(model.importance_log_likelihood(x, c, k=t.eval_k).sum())
            iw_count += len(x)
    if not count:
        return {}
    out = {f"test_{k}": v / count for k, v in sums.items()}
    if iw_count:
        out["test_log_px_iw"] = iw_sum / iw_count
        out["test_bits_per_dim_iw"] = bits_per_dim(out["test_log_px_iw"], model.num_dims)
        out["iw_samples"] = t.eval_k
        out["iw_images"] = iw_count
    out["test_images"] = count
    return out


def export(model: VAEBase, run_dir: Path, attribute_names: list[str]) -> Path:
    """model.safetensors + model.json: everything ``load`` needs, no pickle, no Lightning."""
    return export_weights(model, run_dir, {"model": model.config.to_dict(), "attribute_names": attribute_names})


def load(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> VAEBase:
    """A trained model from a run directory, ready to encode/decode/sample (eval mode).

    A damaged model.safetensors or model.json is a RunError naming the file.
    """
    state, info = read_exported(run_dir)
    info_path, fix = Path(run_dir) / "model.json", reexport_fix(run_dir)
    if info.get("kind") == CLASSIFIER_KIND:
        raise RunError(f"{run_dir}: an attribute-classifier run, not a VAE run; load it with "
                       "facevae.recognition.train.load_classifier")
    if not isinstance(info.get("model"), dict):
        raise RunError(f"{info_path}: has no 'model' object (not a VAE run's model.json?); {fix}")
    try:
        model = build_model(ModelConfig.from_dict(info["model"]))
    except (ValueError, TypeError) as exc:  # a value that the model's settings refuse, as they word it
        raise RunError(f"{info_path}: {str(exc).replace('ModelConfig.', 'model.')}; {fix}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise RunError(f"{info_path}: describes another model than the weights in model.safetensors "
                       f"({(lines[1:] or lines)[0]}); {fix}") from None
    model.attribute_names = info.get("attribute_names", [])
    return model.to(device).eval()


def resume(run_dir: str | os.PathLike, **overrides) -> dict:
    """Continue the run at ``run_dir`` from its last checkpoint, wherever that folder is now.

    The run is the folder given, not the ``run_dir`` its config.yaml recorded: a copied or moved
    run resumes (and writes) where it is, and never touches the folder it was copied from. A run
    that finished is evaluated and exported again (from its best.ckpt), without training.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunError(f"{run_dir}: not a run directory (no config.yaml); train one with `facevae train`")
    claim_run_dir(run_dir, resume=True)  # no checkpoint: say so, whatever the config holds
    config = RunConfig.load(run_dir / "config.yaml")
    config.check_data_present(run_dir)
    config.train.run_dir = str(run_dir)
    for key, value in overrides.items():
        setattr(config.train, key, value)
    return train(config, resume=True)
