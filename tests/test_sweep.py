"""Optuna sweeps: trials are runs, workers share a study and its budget, a killed worker's trial is retried."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from facevae.cli import main

# A trial is a real `facevae train` run: as small and fast as one can be.
TRIAL = ["--model", "vae", "--width", "1", "--latent-dim", "4", "--image-size", "32", "--batch-size", "16",
         "--likelihood", "gaussian", "--eval-k", "2", "--eval-batches", "1", "--epochs", "1", "--patience", "0",
         "--no-progress"]
FAST_HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "2"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """96 synthetic faces at 32×32 (about 77 train, 9 valid, 10 test)."""
    from facevae.data.synthetic import write_synthetic_packed

    return write_synthetic_packed(tmp_path_factory.mktemp("sweepdata") / "data", 96, size=32, seed=2,
                                  progress=False).root


def sweep(data: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", "--data", str(data), "--out", str(out), "--param", "beta=1,2", "--param", "width=1,2",
            *TRIAL, *extra]


def trials_of(out: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'sweep.db'}").get_trials()


def point(t) -> tuple:
    return tuple(sorted(t.params.items()))


def test_four_trial_sweep_two_objectives_and_report(tiny_data, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(sweep(tiny_data, out, "--objective2", "mig", "--metric-n", "20", "--metric-n-eval", "5")) == 0
    trials = trials_of(out)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({point(t) for t in trials}) == 4  # the whole 2×2 grid, each point once
    for t in trials:
        run = Path(t.user_attrs["run_dir"])
        assert run == out / f"trial-{t.number:04d}" and (run / "model.safetensors").is_file()
        metrics = json.loads((run / "metrics.json").read_text())
        assert t.values == [metrics["best_val_elbo"], metrics["disentanglement"]["scores"]["mig"]]
        assert t.user_attrs["beta_norm"] == pytest.approx(t.params["beta"] * 4 / (3 * 32 * 32))
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["space"] == {"beta": [1.0, 2.0], "width": [1, 2]} and saved["objectives"] == ["val_elbo", "mig"]

    capsys.readouterr()
    assert main(["sweep-report", str(out)]) == 0
    table = capsys.readouterr().out
    report = json.loads((out / "sweep_report.json").read_text())
    best_elbo = max(t.values[0] for t in trials)
    assert report["best"]["values"]["val_elbo"] == best_elbo  # the best ELBO is always on the Pareto front
    assert report["best"]["number"] in report["pareto_front"]
    assert f"best: trial #{report['best']['number']}" in table and table.count("complete") == 4
    for name in ("objective_vs_beta.png", "pareto.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    page = (out / "sweep_report.html").read_text()
    assert f'href="trial-{report["best"]["number"]:04d}"' in page and "β_norm" in page


def test_a_failing_trial_fails_and_the_study_goes_on(tiny_data, tmp_path):
    out = tmp_path / "sweep"
    # a split that does not exist fails when the trial's data is opened, as a NaN loss fails mid-run
    assert main(["sweep", "--data", str(tiny_data), "--out", str(out), "--param", "split=official,nosuch",
                 *TRIAL]) == 0
    states = {t.params["split"]: t for t in trials_of(out)}
    assert states["official"].state == TrialState.COMPLETE
    assert states["nosuch"].state == TrialState.FAIL and "nosuch" in states["nosuch"].user_attrs["error"]


def test_two_workers_share_the_budget_without_duplicates(tiny_data, tmp_path):
    out = tmp_path / "sweep"
    assert main(sweep(tiny_data, out, "--workers", "2", "--trials", "3")) == 0
    trials = [t for t in trials_of(out) if not t.user_attrs.get("surplus")]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert len({point(t) for t in trials}) == 3
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes trained
    assert all((Path(t.user_attrs["run_dir"]) / "model.safetensors").is_file() for t in trials)


def test_no_more_workers_start_than_the_study_has_trials(tiny_data, tmp_path, monkeypatch, capsys):
    import facevae.reporting.sweep_report
    import facevae.sweeps.study

    started = []
    monkeypatch.setattr(facevae.sweeps.study, "run_sweep", lambda config, workers: started.append(workers))
    monkeypatch.setattr(facevae.reporting.sweep_report, "build_sweep_report",
                        lambda out: {"files": {"html": "-"}, "trials": []})
    monkeypatch.setattr(facevae.reporting.sweep_report, "format_trials", lambda report: "")
    # 1,000 processes importing torch each would exhaust the memory of most machines
    assert main(sweep(tiny_data, tmp_path / "sweep", "--workers", "1000")) == 0
    assert started == [4] and "4 worker(s) here, not 1000" in capsys.readouterr().out


def kill_when(args: list[str], ready) -> None:
    """Runs ``facevae ARGS`` in a process and SIGKILLs it once ``ready()``."""
    worker = subprocess.Popen([sys.executable, "-m", "facevae", *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not ready():
            assert worker.poll() is None and time.monotonic() < deadline, "the process never got there"
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()


def last_step(run: Path) -> int:
    from facevae.training.checkpoints import safe_load

    try:
        return safe_load(run / "checkpoints" / "last.ckpt")["global_step"]
    except Exception:  # not there yet
        return -1


@pytest.mark.parametrize("when", ["before its first checkpoint", "mid-training", "mid-training, rerun with another --lr"])
def test_a_killed_worker_leaves_the_study_usable(tiny_data, tmp_path, capsys, when):
    out = tmp_path / "sweep"
    args = sweep(tiny_data, out, "--trials", "2", "--checkpoint-every-steps", "2", *FAST_HEARTBEAT)
    args[args.index("--epochs") + 1] = "3"
    first = out / "trial-0000"
    kill_when(args, (lambda: (first / "config.yaml").is_file()) if when.startswith("before") else
                    (lambda: last_step(first) >= 4))
    assert trials_of(out)[0].state == TrialState.RUNNING  # nobody told the study
    time.sleep(3)  # past the grace period: its heartbeat has stopped

    rerun = [*args, "--lr", "1e-3"] if "another" in when else args
    assert main(rerun) == 0
    trials = trials_of(out)
    killed, *rest = trials
    assert killed.state == TrialState.FAIL
    assert [t.state for t in rest] == [TrialState.COMPLETE] * 2  # exactly the 2 requested trials
    retry = next(t for t in rest if t.system_attrs.get("failed_trial") == 0)
    assert point(retry) == point(killed) and len({point(t) for t in rest}) == 2
    printed = capsys.readouterr()
    continued = "continues" in printed.out
    # the retry continues the killed trial's run where that left a checkpoint made with the same settings,
    # else starts its own
    assert continued == (when == "mid-training")
    assert ("the sweep's settings changed since trial 0000" in printed.err) == ("another" in when)
    assert Path(retry.user_attrs["run_dir"]).name == ("trial-0000" if continued else f"trial-{retry.number:04d}")
    assert (out / f"trial-{retry.number:04d}").is_dir() != continued
    epochs = json.loads((Path(retry.user_attrs["run_dir"]) / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]


def test_bad_sweep_input_is_a_one_line_error(tiny_data, tmp_path, capsys):
    base = ["sweep", "--data", str(tiny_data), "--out", str(tmp_path / "s"), *TRIAL]
    cases = {"colour=1,2": "not a flag of facevae train", "beta": "expected NAME=V1,V2",
             "beta=1,,2": "expected NAME=V1,V2", "width=1,x": "'x' is not a valid int",
             "model=vae,gan": "not one of", "beta=2,2": "listed twice",
             "model=vae..cvae": "only a number setting", "flip=false..true": "only a number setting",
             "lr=1e-2..1e-4": "low end must be below", "lr=0..1e-2:log": "log range must be above 0",
             "lr=1e-4..1e-2:cubic": "not a range", "latent-dim=4..32.5": "'32.5' is not a valid int",
             "lr=1e-4..1e-2:log": "a grid cannot hold"}
    for spec, message in cases.items():
        assert main([*base, "--param", spec]) == 2, spec
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (spec, err)
    # a point `facevae train` would refuse is found before anything runs
    assert main([*base, "--param", "beta=1,4", "--model", "betavae"]) == 2
    assert "beta=1.0" in capsys.readouterr().err and not (tmp_path / "s").exists()
    assert main(["sweep-report", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err


def test_ranges_are_searched_by_tpe_within_their_ends_and_the_report_plots_them(tiny_data, tmp_path, capsys):
    from facevae.sweeps.search_space import parse_param

    assert parse_param("lr=1e-4..1e-2:log") == ("lr", {"low": 1e-4, "high": 1e-2, "log": True, "type": "float"})
    assert parse_param("--latent-dim=2..4") == ("latent_dim", {"low": 2, "high": 4, "log": False, "type": "int"})
    out = tmp_path / "sweep"
    argv = ["sweep", "--data", str(tiny_data), "--out", str(out), "--sampler", "tpe", "--trials", "3",
            "--param", "lr=1e-4..1e-2:log", "--param", "latent-dim=2..4", "--param", "beta=1,4", *TRIAL]
    assert main(argv) == 0
    trials = trials_of(out)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for t in trials:
        lr, dim = t.distributions["lr"], t.distributions["latent_dim"]
        assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log and (lr.low, lr.high) == (1e-4, 1e-2)
        assert isinstance(dim, optuna.distributions.IntDistribution) and (dim.low, dim.high) == (2, 4)
        assert 1e-4 <= t.params["lr"] <= 1e-2 and t.params["latent_dim"] in (2, 3, 4)
        config = yaml.safe_load((Path(t.user_attrs["run_dir"]) / "config.yaml").read_text())
        assert config["train"]["lr"] == t.params["lr"] and config["model"]["latent_dim"] == t.params["latent_dim"]
    assert len({t.params["lr"] for t in trials}) == 3  # drawn from the range, not from a few listed values
    capsys.readouterr()
    assert main(["sweep-report", str(out)]) == 0
    assert (out / "objective_vs_ranges.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "sweep_report.json").read_text())
    assert set(report["by_beta"]["val_elbo"]) <= {"all trials"}  # no line per drawn lr or latent size
    assert "Against the ranged settings" in (out / "sweep_report.html").read_text()


def test_a_damaged_sweep_json_is_a_one_line_error(tmp_path, capsys):
    good = {"out": str(tmp_path), "storage": "sqlite:///x.db", "study": "s", "space": {"beta": [1.0]},
            "objectives": ["val_elbo"], "directions": ["maximize"], "trials": 1}
    cases = {"{bad": "not valid JSON", "[1]": "holds a list, not an object", '{"out": "x"}': "lacks storage, study, space",
             json.dumps(good | {"space": {"lr": {"low": 1}}}): "its space is not lists of values and ranges",
             json.dumps(good | {"space": {"beta": []}}): "its space is not lists"}
    for text, message in cases.items():
        (tmp_path / "sweep.json").write_text(text)
        assert main(["sweep-report", str(tmp_path)]) == 2, text
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (text, err)


def test_joining_worker_must_run_the_same_sweep(tmp_path):
    from facevae.sweeps.study import SweepConfig, open_study

    config = SweepConfig(out=str(tmp_path), storage=f"sqlite:///{tmp_path / 'db.sqlite'}", study="s",
                         space={"beta": [1.0, 2.0]}, objectives=["val_elbo"], directions=["maximize"], trials=2)
    open_study(config)
    config.space = {"beta": [1.0, 4.0]}
    with pytest.raises(ValueError, match="space"):
        open_study(config)


def test_budget_counts_retries_once_and_marks_surplus_trials():
    from facevae.sweeps import budget
    from facevae.sweeps.storage import retry_killed_trial

    study = optuna.create_study()
    killed = study.ask({"beta": optuna.distributions.CategoricalDistribution([1.0, 2.0])})
    study.tell(killed, state=TrialState.FAIL)
    retry_killed_trial(study, study.trials[0])
    assert budget.places_taken(study.trials) == 1 and budget.budget_left(study, 2) == 2  # the waiting retry + 1
    retry = study.ask()
    assert retry.params == killed.params
    budget.claim_place(retry, 2)  # one place before it: fine
    extra = study.ask({"beta": optuna.distributions.CategoricalDistribution([1.0, 2.0])})
    budget.claim_place(extra, 2)
    late = study.ask()
    with pytest.raises(optuna.TrialPruned):
        budget.claim_place(late, 2)
    assert study.trials[-1].user_attrs["surplus"] is True


def test_pruning_callback_reports_and_prunes():
    from facevae.sweeps.pruning import ReportValidationElbo

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=-100.0))
    trial = study.ask()
    callback = ReportValidationElbo(trial)
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0,
                              callback_metrics={"val_elbo": torch.tensor(-50.0)})
    callback.on_validation_epoch_end(trainer, None)
    trainer.callback_metrics["val_elbo"], trainer.current_epoch = torch.tensor(float("nan")), 1
    callback.on_validation_epoch_end(trainer, None)  # not reported: a diverged run fails by itself
    trainer.callback_metrics["val_elbo"], trainer.current_epoch = torch.tensor(-500.0), 2
    with pytest.raises(optuna.TrialPruned, match="epoch 2"):
        callback.on_validation_epoch_end(trainer, None)
    assert study.trials[0].intermediate_values == {0: -50.0, 2: -500.0}


@pytest.mark.parametrize("command", ["sweep", "sweep-report"])
def test_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and f"example:\n  facevae {command} " in capsys.readouterr().out


def test_seeds_repeat_every_point_and_the_report_aggregates_them(tiny_data, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--data", str(tiny_data), "--out", str(out), "--param", "beta=1,4,16", "--seeds", "2",
            "--metrics", "mig", "--objective", "mig", "--metric-n", "20", "--metric-n-eval", "5", *TRIAL]
    assert main(argv) == 0
    trials = trials_of(out)
    assert sorted((t.params["beta"], t.params["seed"]) for t in trials) == [(b, s) for b in (1.0, 4.0, 16.0)
                                                                             for s in (0, 1)]
    weights = {}
    for t in trials:
        from safetensors.torch import load_file

        weights[(t.params["beta"], t.params["seed"])] = load_file(str(Path(t.user_attrs["run_dir"]) / "model.safetensors"))
    a, b = weights[(1.0, 0)], weights[(1.0, 1)]
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the seeds gave distinct runs
    report = json.loads((out / "sweep_report.json").read_text())
    choice = report["beta_choice"]
    mig = {(t.params["beta"], t.params["seed"]): t.values[0] for t in trials}
    means = {beta: (mig[(beta, 0)] + mig[(beta, 1)]) / 2 for beta in (1.0, 4.0, 16.0)}
    (pick,) = choice["picks"].values()
    assert pick["beta"] == max(means, key=means.get) and pick["seeds"] == 2
    assert pick["mean"] == pytest.approx(means[pick["beta"]]) and "highest" in choice["rule"]
    points = report["by_beta"]["mig"]["all trials"]
    assert [p[0] for p in points] == [1.0, 4.0, 16.0] and all(p[3] == 2 for p in points)
    assert points[0][2] == pytest.approx(abs(mig[(1.0, 0)] - mig[(1.0, 1)]) / 2 ** 0.5)  # the sample s.d. of two
    page = (out / "sweep_report.html").read_text()
    assert "Which β" in page and "Rule:" in page and "mean ± s.d." in page
    assert main(["sweep", "--data", str(tiny_data), "--out", str(tmp_path / "x"), "--param", "seed=0,1", "--seeds",
                 "2", *TRIAL]) == 2


def test_together_trains_every_point_as_one_stack_and_scores_each_as_a_trial(tiny_data, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--data", str(tiny_data), "--out", str(out), "--param", "beta=1,4", "--seeds", "2", "--together",
            "--objective", "val_elbo", "--objective2", "mig", "--metric-n", "20", "--metric-n-eval", "5", *TRIAL]
    assert main(argv) == 0
    trials = trials_of(out)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert sorted((t.params["beta"], t.params["seed"]) for t in trials) == [(1.0, 0), (1.0, 1), (4.0, 0), (4.0, 1)]
    for t in trials:
        run = Path(t.user_attrs["run_dir"])
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["trained_together"] == 4 and (run / "model.safetensors").is_file()
        assert t.values == [metrics["best_val_elbo"], metrics["disentanglement"]["scores"]["mig"]]
    assert (out / "stack-0000" / "checkpoints" / "last.ckpt").is_file()
    assert "4 trials together" in capsys.readouterr().out
    # what cannot train as one stack is said before anything runs
    for extra, message in ((["--param", "width=1,2"], "these differ too: width"), (["--workers", "2"], "--workers")):
        assert main(["sweep", "--data", str(tiny_data), "--out", str(tmp_path / "x"), "--param", "beta=1,4",
                     "--together", *extra, *TRIAL]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()


def test_a_stopped_stack_queues_its_points_again(tiny_data, tmp_path, monkeypatch, capsys):
    def stopped(configs, stack_dir, resume=False):
        raise KeyboardInterrupt

    monkeypatch.setattr("facevae.training.together.train_together", stopped)
    out = tmp_path / "sweep"
    argv = ["sweep", "--data", str(tiny_data), "--out", str(out), "--param", "beta=1,4", "--together", *TRIAL]
    assert main(argv) == 130
    assert "queued again" in capsys.readouterr().err
    trials = trials_of(out)
    assert sorted(t.state.name for t in trials) == ["FAIL", "FAIL", "WAITING", "WAITING"]
    assert sorted(t.params["beta"] for t in trials if t.state == TrialState.WAITING) == [1.0, 4.0]
    monkeypatch.undo()
    assert main(argv) == 0  # the same command trains the queued points
    done = [t for t in trials_of(out) if t.state == TrialState.COMPLETE]
    assert sorted(t.params["beta"] for t in done) == [1.0, 4.0]


def test_a_killed_stack_is_retried_and_continues_from_its_last_checkpoint(tiny_data, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--data", str(tiny_data), "--out", str(out), "--param", "beta=1,4", "--together",
            "--checkpoint-every-steps", "2", *TRIAL, *FAST_HEARTBEAT]
    args[args.index("--epochs") + 1] = "3"
    stack = out / "stack-0000"
    kill_when(args, lambda: last_step(stack) >= 6)
    assert [t.state for t in trials_of(out)] == [TrialState.RUNNING] * 2  # nobody told the study
    killed_at = last_step(stack)

    assert main(args) == 0  # waits for their heartbeats to go stale, then takes them back
    assert f"continuing the stack of 2 trials together, in {stack}" in capsys.readouterr().out
    killed, retries = trials_of(out)[:2], trials_of(out)[2:]
    assert [t.state for t in killed] == [TrialState.FAIL] * 2
    assert [t.state for t in retries] == [TrialState.COMPLETE] * 2
    for retry in retries:  # each in its killed member's run directory, which ends as a run alone's
        member = killed[retry.system_attrs["failed_trial"]]
        assert retry.user_attrs["run_dir"] == member.user_attrs["run_dir"] and point(retry) == point(member)
        metrics = json.loads((Path(retry.user_attrs["run_dir"]) / "metrics.json").read_text())
        assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2] and metrics["trained_together"] == 2
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("trial-", "stack-"))) == \
        ["stack-0000", "trial-0000", "trial-0001"]
    steps = [e["step"] for e in json.loads((out / "trial-0000" / "metrics.json").read_text())["epochs"]]
    assert killed_at >= 6 and steps == [5, 10, 15]  # it went on from its checkpoint to the end
