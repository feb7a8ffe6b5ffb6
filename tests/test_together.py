"""Models trained as one stack (facevae.training.together): each member as its run alone, each on its own."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import CrashAt, SimulatedCrash
from facevae.common.errors import RunError
from facevae.data.synthetic import write_synthetic_packed
from facevae.training.checkpoints import safe_load
from facevae.training.config import RunConfig
from facevae.training.module import NonFiniteLossError
from facevae.training.run import train
from facevae.training.together import MemberRuns, StackedVAEModule, check_members, train_together

SMALL = dict(model="vae", width=1, latent_dim=4, image_size=32, batch_size=16, likelihood="gaussian", eval_k=2,
             eval_batches=1, epochs=2, patience=0, progress=False, precision="32-true")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic_packed(tmp_path_factory.mktemp("stack") / "data", 96, size=32, seed=2, progress=False).root


def member(data, run_dir, **values) -> RunConfig:
    return RunConfig.from_settings({**SMALL, "data": str(data), "run_dir": str(run_dir), **values})


def relative_gap(a: dict, b: dict) -> float:
    """Mean absolute difference of two state dicts' floating weights over their mean magnitude."""
    keys = [k for k in a if a[k].is_floating_point()]
    diff = sum(float((a[k] - b[k]).abs().sum()) for k in keys)
    return diff / sum(float(a[k].abs().sum()) for k in keys)


def test_a_member_trained_together_equals_its_run_alone(data, tmp_path):
    points = [dict(beta=1.0, seed=0), dict(beta=4.0, seed=0), dict(beta=4.0, seed=1)]
    configs = [member(data, tmp_path / f"trial-{i}", **p) for i, p in enumerate(points)]
    results = train_together(configs, tmp_path / "stack")
    assert all(isinstance(r, dict) for r in results), results
    alone = train(member(data, tmp_path / "alone", **points[2]))
    together = results[2]
    # the same epochs, steps and numbers, up to float rounding (vmapped convolutions add in another order)
    assert [e["step"] for e in together["epochs"]] == [e["step"] for e in alone["epochs"]] == [5, 10]
    assert math.isclose(together["best_val_elbo"], alone["best_val_elbo"], rel_tol=1e-4)
    assert math.isclose(together["test"]["test_elbo"], alone["test"]["test_elbo"], rel_tol=1e-4)
    weights = {name: load_file(tmp_path / name / "model.safetensors") for name in ("alone", "trial-1", "trial-2")}
    assert relative_gap(weights["alone"], weights["trial-2"]) < 1e-4
    # what the tolerance tells apart: the same β with another seed is a different model
    assert relative_gap(weights["alone"], weights["trial-1"]) > 100 * relative_gap(weights["alone"], weights["trial-2"])
    for i, p in enumerate(points):  # each member's folder is a run's
        run = tmp_path / f"trial-{i}"
        config = RunConfig.load(run / "config.yaml")
        assert (config.model.beta, config.train.seed) == (p["beta"], p["seed"])
        assert json.loads((run / "metrics.json").read_text())["trained_together"] == 3
        assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "stack" / "checkpoints" / "last.ckpt").is_file()


def test_a_killed_stack_resumes_from_its_last_checkpoint_to_the_weights_of_one_never_stopped(data, tmp_path):
    points = [dict(beta=1.0, seed=0), dict(beta=4.0, seed=1)]
    for name in ("whole", "killed"):
        (tmp_path / name).mkdir()
    whole = [member(data, tmp_path / "whole" / f"m{i}", checkpoint_every_steps=2, **p) for i, p in enumerate(points)]
    assert all(isinstance(r, dict) for r in train_together(whole, tmp_path / "whole" / "stack"))
    killed = [member(data, tmp_path / "killed" / f"m{i}", checkpoint_every_steps=2, **p) for i, p in enumerate(points)]
    with pytest.raises(SimulatedCrash, match="killed after step 8"):
        train_together(killed, tmp_path / "killed" / "stack", progress_callbacks=[CrashAt(8)])
    saved = safe_load(tmp_path / "killed" / "stack" / "checkpoints" / "last.ckpt")["global_step"]
    assert 5 < saved < 8  # from the middle of the second of two 5-step epochs
    with pytest.raises(RunError, match="already holds a run"):  # a fresh start would overwrite it
        train_together(killed, tmp_path / "killed" / "stack")

    members = [RunConfig.load(tmp_path / "killed" / f"m{i}" / "config.yaml") for i in range(2)]
    results = train_together(members, tmp_path / "killed" / "stack", resume=True)
    assert all(isinstance(r, dict) for r in results), results
    for i in range(2):
        a, b = (load_file(tmp_path / name / f"m{i}" / "model.safetensors") for name in ("whole", "killed"))
        assert all(torch.equal(a[k], b[k]) for k in a)  # the same batches, noise and updates
        rows = [json.loads((tmp_path / name / f"m{i}" / "metrics.json").read_text())["epochs"] for name in ("whole", "killed")]
        assert [(r["epoch"], r["step"]) for r in rows[1]] == [(r["epoch"], r["step"]) for r in rows[0]] == [(0, 5), (1, 10)]
        assert math.isclose(rows[1][-1]["val_elbo"], rows[0][-1]["val_elbo"], rel_tol=1e-6)


def test_members_must_differ_only_in_beta_and_seed(data, tmp_path):
    one = member(data, tmp_path / "a", beta=1.0)
    with pytest.raises(ValueError, match="these differ too: width"):
        check_members([one, member(data, tmp_path / "b", beta=2.0, width=2)])
    with pytest.raises(ValueError, match="--ema"):
        check_members([member(data, tmp_path / "c", ema=0.99)])
    with pytest.raises(ValueError, match="--loss beta"):
        check_members([member(data, tmp_path / "d", loss="tcvae")])
    check_members([one, member(data, tmp_path / "e", beta_norm=2.0, seed=3)])  # no error


def test_a_member_with_a_non_finite_loss_stops_and_the_others_go_on(data, tmp_path):
    module = StackedVAEModule([member(data, tmp_path / f"m{i}", seed=i).to_dict() for i in range(2)])
    terms = {"loss": torch.tensor([1.0, float("nan")]), "recon": torch.ones(2), "kl": torch.ones(2)}
    module._note_failures(terms)
    assert module.alive == [True, False] and "non-finite training loss" in module.failures[1]
    module.finished[0] = True  # stopped early: what it computes after that is no step of its run
    module._note_failures({**terms, "loss": torch.tensor([float("nan"), 1.0])})
    assert module.alive == [True, False]
    module.finished[0] = False
    with pytest.raises(NonFiniteLossError):
        module._note_failures({**terms, "loss": torch.tensor([float("inf"), 1.0])})


def test_each_member_stops_early_on_its_own(data, tmp_path, monkeypatch):
    configs = [member(data, tmp_path / f"m{i}", seed=i, patience=p) for i, p in enumerate((1, 2))]
    for i in range(2):
        (tmp_path / f"m{i}").mkdir()
    runs = MemberRuns(configs)
    saved = []
    monkeypatch.setattr("facevae.training.together.atomic_torch_save", lambda obj, path: saved.append(Path(path)))
    module = SimpleNamespace(alive=[True, True], finished=[False, False], member_state=lambda m: {"w": torch.zeros(1)})
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, should_stop=False, current_epoch=0,
                              global_step=0, callback_metrics={})
    for epoch, (a, b) in enumerate([(-10.0, -10.0), (-11.0, -11.0), (-12.0, -9.0), (-8.0, -12.0), (-7.0, -13.0)]):
        trainer.current_epoch, trainer.global_step = epoch, 5 * (epoch + 1)
        trainer.callback_metrics = {"m0/val_elbo": torch.tensor(a), "m1/val_elbo": torch.tensor(b)}
        runs.on_validation_epoch_end(trainer, module)
    # member 0 (patience 1) stopped after epoch 1 and never saw its later -8; member 1 (patience 2) after epoch 4
    assert runs.stopped == [True, True] == module.finished and trainer.should_stop
    assert runs.best == [-10.0, -9.0]
    assert [e["epoch"] for e in runs.metrics[0].data["epochs"]] == [0, 1]
    assert [e["epoch"] for e in runs.metrics[1].data["epochs"]] == [0, 1, 2, 3, 4]
    assert saved == [tmp_path / "m0/checkpoints/best.ckpt", tmp_path / "m1/checkpoints/best.ckpt",
                     tmp_path / "m1/checkpoints/best.ckpt"]
