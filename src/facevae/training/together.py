"""Train flat VAEs that differ only in β (or β_norm) and seed as one stacked model: ``facevae sweep --together``.

The members' weights are stacked (torch.func.stack_module_state) and one step runs all of them at once
(torch.func.vmap over functional_call), with one AdamW over the stacked tensors: Adam works element by
element, so each member's slice gets the update its run alone would get. Each member draws its
reparameterisation noise (and its flips) from its own copy of torch's global generator, seeded and
consumed as its run alone would, and reads its batches in its own seed's order; so a member ends with the
weights of its run alone, up to float rounding (vmapped convolutions add in another order).

Each member gets the run directory of a run alone: config.yaml, checkpoints/best.ckpt at its best
validation ELBO, model.safetensors, model.json and metrics.json with its epochs and test numbers; its early
stop (patience) is its own. The stack itself lives in its own folder (last.ckpt, logs).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path

import lightning as L
import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state, vmap

from facevae.common.lock import hold
from facevae.models import build_model
from facevae.training.callbacks import MetricsFile
from facevae.training.checkpoints import atomic_torch_save
from facevae.training.config import RunConfig
from facevae.training.console import lightning_quiet
from facevae.training.module import NonFiniteLossError, optimizers_for

MAY_DIFFER = {"beta", "beta_norm", "seed", "run_dir"}
FLAT_MODELS = {"vae", "cvae", "betavae"}


def check_members(configs: list[RunConfig]) -> None:
    """A ValueError naming the setting, unless the configs can train as one stack."""
    if len(configs) < 1:
        raise ValueError("a stack needs at least one member")
    first = configs[0]
    if first.model.model not in FLAT_MODELS or first.model.loss != "beta":
        raise ValueError(f"--together trains the flat models ({', '.join(sorted(FLAT_MODELS))}) with --loss beta; "
                         f"got --model {first.model.model} --loss {first.model.loss}")
    t = first.train
    # each would couple the members (one gradient norm, one plateau, one compiled graph) or is not built here
    unsupported = {"--gradient-clip": t.gradient_clip, "--skip-updates": t.skip_updates, "--ema": t.ema,
                   "--compile": t.compile, "--channels-last": t.channels_last,
                   "--lr-schedule plateau": t.lr_schedule == "plateau",
                   "--num-nodes": t.num_nodes > 1, "--devices (more than one)": t.devices not in ("auto", "1", "0,")}
    given = [flag for flag, value in unsupported.items() if value]
    if given:
        raise ValueError(f"--together does not support {', '.join(given)}: train those points alone (without --together)")
    reference = _shared(first)
    for config in configs[1:]:
        shared = _shared(config)
        differ = sorted(k.split(".")[1] for k in reference if reference[k] != shared[k])
        if differ:
            raise ValueError(f"--together trains members that differ only in beta, beta_norm and seed; these differ "
                             f"too: {', '.join(d.replace('_', '-') for d in differ)}")


def _shared(config: RunConfig) -> dict:
    parts = config.to_dict()
    return {f"{part}.{k}": v for part, values in parts.items() for k, v in values.items() if k not in MAY_DIFFER}


def _generators(device: torch.device) -> list[torch.Generator]:
    """The default generators a run's noise comes from: the CPU's, and the GPU's when it runs on one."""
    if device.type == "cuda":
        return [torch.default_generator, torch.cuda.default_generators[device.index or 0]]
    return [torch.default_generator]


class MemberRandomness:
    """One copy of torch's default generators per member, swapped in while that member draws.

    A member's copy starts as its run alone would find it at its first step: seeded with its seed, then
    advanced by building its model (the CPU's); a GPU's generator is only seeded.
    """

    def __init__(self, seeds: list[int], cpu_states: list[torch.Tensor]):
        self.seeds = list(seeds)
        self.states: list[list[torch.Tensor]] = [[state] for state in cpu_states]

    @contextmanager
    def of(self, member: int, device: torch.device, keep: bool = True):
        """Member ``member``'s generators in place for the block; ``keep`` False puts them back as they were after
        it (what Lightning does to torch's own around its sanity check)."""
        generators = _generators(device)
        states = self.states[member]
        for extra in generators[len(states):]:  # first use of a GPU: its generator as seeding left it
            saved = extra.get_state()
            extra.manual_seed(self.seeds[member])
            states.append(extra.get_state())
            extra.set_state(saved)
        saved = [g.get_state() for g in generators]
        for g, state in zip(generators, states):
            g.set_state(state)
        try:
            yield
        finally:
            if keep:
                self.states[member] = [g.get_state() for g in generators]
            for g, state in zip(generators, saved):
                g.set_state(state)


class _Objective(nn.Module):
    """The model's training objective as a module's forward, for functional_call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, c, noise, kl_weight, step):
        return self.model.loss(x, c, kl_weight=kl_weight, step=step, noise=noise)


def _safe(name: str) -> str:
    return name.replace(".", "__")  # a parameter's name cannot hold dots


class StackedVAEModule(L.LightningModule):
    """M flat VAEs of one architecture, trained as one: each step is one vmapped pass over all of them."""

    def __init__(self, configs: list[dict]):
        super().__init__()
        self.save_hyperparameters({"configs": configs})
        self.members = [RunConfig.from_dict(c) for c in configs]
        models, cpu_states = [], []
        for member in self.members:  # each as its run alone builds it: seeded, then initialised
            L.seed_everything(member.train.seed, workers=True, verbose=False)
            models.append(_Objective(build_model(member.model)))
            cpu_states.append(torch.get_rng_state())
        self.rng = MemberRandomness([m.train.seed for m in self.members], cpu_states)
        # not a submodule: its weights are the stacked ones, passed in at every call
        object.__setattr__(self, "_template", copy.deepcopy(models[0]).to("meta"))
        params, buffers = stack_module_state(models)
        self._param_names, self._buffer_names = list(params), list(buffers)
        for name, value in params.items():
            self.register_parameter(_safe(name), nn.Parameter(value.detach()))
        for name, value in buffers.items():
            self.register_buffer(_safe(name), value)
        self.alive = [True] * len(self.members)  # False once a member's loss was non-finite
        self.finished = [False] * len(self.members)  # True once a member stopped early (set by MemberRuns)
        self.failures: dict[int, str] = {}
        self.datamodules: list = []  # set by train_together: each member's data (its order, its batches)
        self.loader_of: list[int] = []  # which training loader each member reads (one per distinct seed)
        self.condition_columns: list[int] | None = None

    # -- the stack ----------------------------------------------------------------------------------------
    def member_state(self, member: int) -> dict[str, torch.Tensor]:
        """Member ``member``'s state dict, as its model alone names it."""
        names = self._param_names + self._buffer_names
        return {name.removeprefix("model."): getattr(self, _safe(name))[member].detach().clone() for name in names}

    def _losses(self, x, c, noise, kl_weight, step) -> dict:
        params = {name: getattr(self, _safe(name)) for name in self._param_names}
        buffers = {name: getattr(self, _safe(name)) for name in self._buffer_names}
        self._template.train(self.training)  # BatchNorm: batch statistics in training, running ones otherwise

        def one(p, b, x, c, noise, weight):
            return functional_call(self._template, (p, b), (x, c, noise, weight, step))

        return vmap(one, in_dims=(0, 0, 0, None if c is None else 0, 0, 0))(params, buffers, x, c, noise, kl_weight)

    def _member_inputs(self, batch, training: bool):
        """(x, c, noise) stacked over members: each member's batch prepared and its noise drawn with its generator."""
        xs, cs, noises = [], [], []
        shared = None if training else self.datamodules[0].prepare_batch(batch, train=False)
        keep = not self.trainer.sanity_checking
        for m in range(len(self.members)):
            with self.rng.of(m, self.device, keep):
                x, y = self.datamodules[m].prepare_batch(batch[self.loader_of[m]], train=True) if training else shared
                noises.append(torch.empty(len(x), self.members[m].model.latent_dim, device=x.device).normal_())
            xs.append(x)
            cs.append(None if self.condition_columns is None else y[:, self.condition_columns])
        c = None if cs[0] is None else torch.stack(cs)
        return torch.stack(xs), c, torch.stack(noises)

    # -- training and validation --------------------------------------------------------------------------------
    def _step(self, batch, stage: str):
        training = stage == "train"
        x, c, noise = self._member_inputs(batch, training)
        weights = [m.model.kl_weight(self.global_step) if training else 1.0 for m in self.members]
        terms = self._losses(x, c, noise, torch.tensor(weights, device=x.device), self.global_step if training else None)
        if training:
            self._note_failures(terms)
        headline = "loss" if training else "elbo"
        members_live = self._live()
        live = torch.tensor(members_live, device=x.device)
        for m in (m for m, alive in enumerate(members_live) if alive):
            self.log_dict({f"m{m}/{stage}_{headline}": terms[headline][m], f"m{m}/{stage}_recon": terms["recon"][m],
                           f"m{m}/{stage}_kl": terms["kl"][m], f"m{m}/{stage}_bpd": terms["bits_per_dim"][m]},
                          on_step=training, on_epoch=True, sync_dist=not training, batch_size=x.shape[1])
        if training:
            self.log("loss", terms["loss"][live].mean(), prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return torch.where(live, terms["loss"], 0.0).sum()  # each member's gradient is its own loss's

    def _live(self) -> list[bool]:
        """The members still training: neither failed nor stopped early (the others ride along unused)."""
        return [a and not f for a, f in zip(self.alive, self.finished)]

    def _note_failures(self, terms: dict) -> None:
        """A member whose loss is non-finite stops there, as its run alone would; the others go on."""
        finite = torch.isfinite(terms["loss"]).tolist()
        for m, (ok, live) in enumerate(zip(finite, self._live())):
            if live and not ok:
                self.alive[m] = False
                self.failures[m] = (f"non-finite training loss at epoch {self.current_epoch}, step {self.global_step} "
                                    f"(recon {float(terms['recon'][m]):.4g}, kl {float(terms['kl'][m]):.4g}); "
                                    "try a lower --lr or --precision 32-true")
        if not any(self.alive):
            raise NonFiniteLossError("every member of the stack: " + next(iter(self.failures.values())))

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def on_save_checkpoint(self, checkpoint):
        checkpoint["members"] = {"rng": self.rng.states, "alive": self.alive, "failures": self.failures,
                                 "finished": self.finished}

    def on_load_checkpoint(self, checkpoint):
        saved = checkpoint.get("members")
        if saved:
            self.rng.states, self.alive, self.failures = saved["rng"], saved["alive"], saved["failures"]
            self.finished = saved["finished"]

    def configure_optimizers(self):
        return optimizers_for(self, self.members[0].train)  # a run alone's; the members share these settings


class MemberRuns(L.Callback):
    """Per member, what its run alone keeps: metrics.json rows, best.ckpt at its best finite validation ELBO,
    and its own early stop after ``patience`` epochs without a better one."""

    def __init__(self, members: list[RunConfig]):
        self.members = members
        self.metrics = [MetricsFile(Path(m.train.run_dir) / "metrics.json", prefix=f"m{i}/") for i, m in enumerate(members)]
        self.best: list[float | None] = [None] * len(members)
        self.wait = [0] * len(members)
        self.stopped = [False] * len(members)

    def on_train_start(self, trainer, pl_module):
        for metrics in self.metrics:
            metrics.on_train_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        for m, member in enumerate(self.members):
            if self.stopped[m] or not pl_module.alive[m]:
                continue
            self.metrics[m].record(trainer)
            value = float(trainer.callback_metrics[f"m{m}/val_elbo"])
            if math.isfinite(value) and (self.best[m] is None or value > self.best[m]):
                self.best[m], self.wait[m] = value, 0
                state = {f"model.{k}": v for k, v in pl_module.member_state(m).items()}
                atomic_torch_save({"state_dict": state, "epoch": trainer.current_epoch, "global_step": trainer.global_step},
                                  Path(member.train.run_dir) / "checkpoints" / "best.ckpt")
            else:
                self.wait[m] += 1
                patience = member.train.patience
                self.stopped[m] = not math.isfinite(value) or (patience > 0 and self.wait[m] >= patience)
                pl_module.finished[m] = self.stopped[m]
        if all(s or not a for s, a in zip(self.stopped, pl_module.alive)):
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait, "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait, self.stopped = state["best"], state["wait"], state["stopped"]


class StackedData(L.LightningDataModule):
    """The members' training loaders side by side (one per distinct seed) and one shared validation loader;
    batches stay raw (uint8) here: the module prepares each member's with its own generator."""

    def __init__(self, datamodules: list, loaders: list[int]):
        super().__init__()
        self.datamodules, self.loaders = datamodules, loaders

    def setup(self, stage: str | None = None) -> None:
        for dm in self.datamodules:
            dm.setup(stage)

    def train_dataloader(self):
        first = {}
        for m, loader in enumerate(self.loaders):
            first.setdefault(loader, m)
        return [self.datamodules[m].train_dataloader() for m in first.values()]

    def val_dataloader(self):
        return self.datamodules[0].val_dataloader()


def train_together(configs: list[RunConfig], stack_dir: Path, progress_callbacks=(),
                   resume: bool = False) -> list[dict | Exception]:
    """Train ``configs`` (see check_members) as one stack in ``stack_dir``; per member its metrics, or the
    exception that ended it. Each member's run directory is written as its run alone would be.

    ``resume``: continue the stack from ``stack_dir``'s last checkpoint, ``configs`` being its members in
    their order (what their config.yaml files hold)."""
    from facevae.training.run import check_resumable, fit, holding_run_dir, lightning_trainer, seeded_datamodule

    check_members(configs)
    with ExitStack() as held:
        for config in configs:
            run_dir = Path(config.train.run_dir)
            # a member's folder has no last.ckpt of its own (the stack's is), and a stack killed while it
            # exported its members may have left some exports; claimed otherwise as its run alone claims it
            held.enter_context(hold(run_dir, what="training") if resume else holding_run_dir(run_dir, resume=False))
        last_ckpt, _ = held.enter_context(holding_run_dir(stack_dir, resume, what="a stack's training"))
        if resume:
            check_resumable(stack_dir)
        datamodules = [seeded_datamodule(c, Path(c.train.run_dir)) for c in configs]
        seeds = sorted({c.train.seed for c in configs})
        module = StackedVAEModule([c.to_dict() for c in configs])
        module.datamodules, module.loader_of = datamodules, [seeds.index(c.train.seed) for c in configs]
        module.condition_columns = configs[0].model.condition_index(datamodules[0].attribute_names) or None
        runs = MemberRuns(configs)
        # each member stops on its own (MemberRuns); one device: the stack is not sharded across processes
        shared = dataclasses.replace(configs[0].train, patience=0, devices="1")
        with lightning_quiet(shared.verbose):
            trainer = lightning_trainer(shared, stack_dir, None, "max", [runs, *progress_callbacks])
            for dm in datamodules:
                dm.trainer = trainer  # their device and rank are the trainer's
            started = time.perf_counter()
            with warnings.catch_warnings():
                # functorch says once per op it runs member by member (the discretised Gaussian's log_ndtr)
                warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet")
                fit(trainer, module, StackedData(datamodules, module.loader_of), last_ckpt if resume else None, stack_dir,
                    command="facevae sweep")
        seconds = round(time.perf_counter() - started, 1)
        return [_finish_member(module, m, config, datamodules[m], runs, seconds, trainer)
                for m, config in enumerate(configs)]


def _finish_member(module, m, config, datamodule, runs, seconds, trainer) -> dict | Exception:
    """Export member ``m``'s best weights and evaluate them on the test split, as a run alone ends; or the
    exception that ended it (one member's failure is its trial's, not the stack's)."""
    from facevae.training.run import _best_epoch, _best_val, best_model, evaluate, export

    if not module.alive[m]:
        return NonFiniteLossError(module.failures[m])
    run_dir = Path(config.train.run_dir)
    try:
        model = best_model(_Objective(build_model(config.model)), run_dir, "finite validation ELBO")
    except Exception as exc:
        return exc
    export(model, run_dir, datamodule.attribute_names)
    with module.rng.of(m, module.device):  # the test ELBO's noise: what its run alone would draw next
        test = evaluate(model.to(module.device), datamodule, config)
    epochs = runs.metrics[m].data["epochs"]
    runs.metrics[m].update(best_epoch=_best_epoch(runs.metrics[m].data), best_val_elbo=_best_val(runs.metrics[m].data),
                           test=test, train_seconds=seconds,
                           global_step=epochs[-1]["step"] if epochs else trainer.global_step,
                           trained_together=len(module.members))
    return runs.metrics[m].data
