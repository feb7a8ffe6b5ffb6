"""The training engine's promises: run directory, seed, NaN, atomic save, safe load, resume, DDP."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

import facevae
from conftest import CrashAt, SimulatedCrash
from facevae.cli import main
from facevae.data.synthetic import write_synthetic_packed
from facevae.models.base import VAEBase
from facevae.training.checkpoints import atomic_torch_save, safe_load
from facevae.training.config import RunConfig, resolve_precision

TINY = ["--width", "1", "--latent-dim", "8", "--image-size", "32", "--batch-size", "32", "--eval-k", "4",
        "--eval-batches", "1", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_packed(tmp_path_factory.mktemp("synth") / "data", 240, size=64, seed=1, progress=False).root


def train_cli(data, run_dir, *extra):
    return main(["train", "--data", str(data), "--run-dir", str(run_dir), "--epochs", "2", *TINY, *extra])


def test_run_directory_holds_everything_and_load_needs_no_lightning(data, tmp_path):
    run = tmp_path / "run"
    assert train_cli(data, run, "--model", "cvae", "--conditions", "report", "--condition-mode", "embedding") == 0
    for name in ("config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "model.safetensors",
                 "model.json", "metrics.json", "logs/csv/metrics.csv", "figures/epoch_000.png", "figures/epoch_001.png"):
        assert (run / name).is_file(), name
    config = RunConfig.load(run / "config.yaml")
    assert config.model.condition_names == ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "No_Beard",
                                            "Male", "Pale_Skin"]
    assert config.model.condition_mode == "embedding" and config.train.epochs == 2
    assert config.train.precision == resolve_precision("auto", "auto") != "auto"  # what auto chose, on record
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    test = metrics["test"]
    from facevae.data.packed import PackedDataset

    assert test["test_images"] == len(PackedDataset(data).indices("official", "test"))
    assert 0 < test["test_bits_per_dim"] < 9
    assert test["test_log_px_iw"] >= test["test_elbo"] - 50  # the IWAE bound is (up to noise) tighter

    model = facevae.load(run)
    assert isinstance(model, VAEBase) and not model.training
    best = safe_load(run / "checkpoints" / "best.ckpt")["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, best["model." + key]), key
    c = torch.zeros(3, 7)
    assert model.sample(3, c).shape == (3, 3, 32, 32)
    posterior = model.encode(torch.rand(3, 3, 32, 32), c)
    assert posterior.mean.shape == (3, 8)


def test_the_default_settings_learn_a_small_set_within_a_few_epochs(data, tmp_path):
    """The defaults that bench/time_to_quality.py chose (width 1, batch 32, lr 2e-3, precision auto), as a user
    gets them: nothing but the data, the epochs and a short final pass given."""
    run = tmp_path / "defaults"
    assert main(["train", "--data", str(data), "--run-dir", str(run), "--model", "cvae", "--epochs", "8",
                 "--eval-k", "4", "--no-progress"]) == 0
    config = RunConfig.load(run / "config.yaml")
    assert (config.model.width, config.train.batch_size, config.train.lr) == (1, 32, 2e-3)
    metrics = json.loads((run / "metrics.json").read_text())
    val = [e["val_bpd"] for e in metrics["epochs"]]
    assert len(val) == 8 and val[-1] < val[0] - 1.0, val  # it learns, by a margin
    assert metrics["test"]["test_bits_per_dim"] < 7.8, metrics["test"]  # 7.29 measured; about 9 untrained


def test_fixed_seed_gives_identical_weights(data, tmp_path):
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert train_cli(data, tmp_path / name, "--model", "vae", "--seed", seed, "--flip") == 0
    a, b, c = (load_file(str(tmp_path / n / "model.safetensors")) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_non_finite_loss_stops_with_a_message_and_never_reaches_a_checkpoint(data, tmp_path, monkeypatch, capsys):
    from facevae.models.conv import ConvVAE

    real = ConvVAE.loss
    calls = {"n": 0}

    def poisoned(self, x, c=None, kl_weight=None, step=None):
        terms = real(self, x, c, kl_weight, step)
        if self.training:
            calls["n"] += 1
            if calls["n"] >= 9:  # in the second epoch, after one good validation
                terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(ConvVAE, "loss", poisoned)
    run = tmp_path / "run"
    code = train_cli(data, run, "--model", "vae", "--checkpoint-every-steps", "1")
    err = capsys.readouterr().err
    assert code == 2
    assert "non-finite training loss at epoch 1" in err and "Traceback" not in err
    for name in ("best.ckpt", "last.ckpt"):
        state = safe_load(run / "checkpoints" / name)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), name
    assert not (run / "model.safetensors").exists()


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"w": torch.ones(3)}, path)

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(safe_load(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/facevae-unpickled-code-ran"


def test_loading_never_unpickles_code(tmp_path):
    if os.path.exists(MARKER):
        os.remove(MARKER)
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        torch.save({"state_dict": {"w": torch.ones(1)}, "extra": Payload()}, f)
    with pytest.raises(ValueError, match="refused to load") as refused:
        safe_load(path)
    assert not os.path.exists(MARKER)
    message = str(refused.value)  # what was found, in one line, without torch's advice to load it unsafely
    assert "system" in message and "\n" not in message and "weights_only" not in message, message
    assert pickle  # the payload is a real pickle exploit: plain pickle.load would run it


def _wait_for(predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sigkilled_run_resumes_from_last_checkpoint_to_the_end(data, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "facevae", "train", "--data", str(data), "--run-dir", str(run), "--model", "vae",
           "--epochs", "3", "--checkpoint-every-steps", "2", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"

    def mid_first_epoch_checkpoint():
        try:
            return safe_load(last)["global_step"] >= 2
        except (OSError, ValueError, RuntimeError):
            return False

    assert _wait_for(mid_first_epoch_checkpoint, 120)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = safe_load(last)["global_step"]
    assert not (run / "model.safetensors").exists()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"][-1]["epoch"] == 2 and metrics["global_step"] > killed_at
    assert "test" in metrics and (run / "model.safetensors").is_file()


def test_resume_and_new_run_errors_are_one_line(data, tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing"), "--no-progress"]) == 2
    assert "config" in capsys.readouterr().err
    assert train_cli(data, tmp_path / "r", "--model", "cvae", "--conditions", "Smiling,Nope") == 2
    assert "unknown attribute(s): Nope" in capsys.readouterr().err
    assert train_cli(data, tmp_path / "e", "--ema", "1.5") == 2
    assert "--ema is a decay in [0, 1)" in capsys.readouterr().err and not (tmp_path / "e").exists()
    assert train_cli(data, tmp_path / "c", "--model", "vae", "--channels", "1") == 2
    assert "--channels 1: " in capsys.readouterr().err and not (tmp_path / "c" / "checkpoints").exists()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_disjoint_shards_into_one_checkpoint(data, tmp_path):
    run, record = tmp_path / "run", tmp_path / "record"
    env = dict(os.environ, FACEVAE_RECORD_BATCHES=str(record), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "facevae", "train", "--data", str(data), "--run-dir", str(run), "--model", "vae",
           "--epochs", "1", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", *TINY]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    # Fingerprints of the training part, computed as the recorder does (synthetic faces can repeat).
    from collections import Counter

    from facevae.data.datamodule import PackedDataModule

    def fingerprints(x):
        flat = x.flatten(1).double()
        return [round(v, 2) for v in (flat @ torch.arange(1, flat.shape[1] + 1, dtype=torch.float64)).tolist()]

    dm = PackedDataModule(data, image_size=32)
    train = Counter(f for x, _ in dm.batches("train") for f in fingerprints(x))
    n = sum(train.values())
    seen = [Counter(round(v, 2) for v in r["images"]) for r in ranks]
    assert [sum(c.values()) for c in seen] == [(n + 1) // 2] * 2  # DistributedSampler: equal shares
    beyond_data = sum(max(0, seen[0][f] + seen[1][f] - train[f]) for f in seen[0] | seen[1])
    assert beyond_data <= n % 2, "the ranks trained on overlapping images"  # only the sampler's padding repeats
    assert set(seen[0]) | set(seen[1]) == set(train)  # together they cover the training part
    assert ranks[0]["weights_checksum"] == pytest.approx(ranks[1]["weights_checksum"], rel=1e-6)
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["best.ckpt", "last.ckpt"]
    state = load_file(str(run / "model.safetensors"))
    checksum = sum(float(v.double().sum()) for k, v in state.items() if "running" not in k and "num_batches" not in k)
    assert checksum == pytest.approx(ranks[0]["weights_checksum"], rel=1e-5)


def test_compile_compiles_the_objective_and_keeps_checkpoint_keys():
    from facevae.models.config import ModelConfig
    from facevae.training.config import TrainConfig
    from facevae.training.module import VAEModule

    config = RunConfig(ModelConfig(model="vae", latent_dim=4, width=1, image_size=32), TrainConfig(compile=True))
    module = VAEModule(config.to_dict())
    # torch.compile is lazy: wrapping costs nothing until the first call, so this checks the wiring only.
    assert module.objective is not module.model.loss and hasattr(module.objective, "_torchdynamo_orig_callable")
    assert not any("_orig_mod" in key for key in module.state_dict())



class ValidatedWeights(L.Callback):
    """The weights each validation epoch actually runs with (after every other hook has set them up)."""

    def __init__(self):
        self.seen = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and not trainer.sanity_checking:
            self.seen.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


@pytest.fixture(scope="module")
def ema_run(data, tmp_path_factory):
    """One epoch with an EMA of the weights, then --resume to a second epoch (watching its validation)."""
    from facevae.training.run import train

    run = tmp_path_factory.mktemp("ema") / "run"
    assert train_cli(data, run, "--model", "vae", "--ema", "0.9", "--epochs", "1", "--patience", "0") == 0
    config = RunConfig.load(run / "config.yaml")
    config.train.epochs = 2
    watch = ValidatedWeights()
    assert train(config, resume=True, callbacks=[watch])["epochs"][-1]["epoch"] == 1
    return run, watch.seen


def test_ema_is_what_gets_validated_checkpointed_exported_and_resumed(ema_run):
    run, validated = ema_run
    last = safe_load(run / "checkpoints" / "last.ckpt")
    averaged, raw = last["state_dict"], last["current_model_state"]
    assert any(not torch.equal(v, raw[k]) for k, v in averaged.items() if v.is_floating_point())
    # One average over both sessions: the resumed run carried on the first one's average, not a fresh copy.
    assert int(last["averaging_state"]["n_averaged"]) == last["global_step"] == 14
    # Validation ran with the average (the resumed session's one validation, after its last step).
    assert len(validated) == 1 and all(torch.equal(v, averaged[k]) for k, v in validated[0].items())
    best = safe_load(run / "checkpoints" / "best.ckpt")["state_dict"]
    model = facevae.load(run)
    assert all(torch.equal(v, best["model." + k]) for k, v in model.state_dict().items())


def test_ema_decay_warms_up_so_a_short_run_is_not_its_untrained_start():
    from facevae.training.run import warmup_ema

    update = warmup_ema(0.999)
    for n, expected_decay in ((0, 0.1), (90, 0.91), (10_000, 0.999)):
        averaged, counter = [torch.zeros(3)], [torch.tensor(5)]
        update(averaged, [torch.ones(3)], torch.tensor(n))
        assert torch.allclose(averaged[0], torch.full((3,), 1 - expected_decay))
        update(counter, [torch.tensor(9)], torch.tensor(n))
        assert int(counter[0]) == 9  # integer buffers follow the model


def test_resumed_run_keeps_the_csv_log_of_the_sessions_before(ema_run):
    from facevae.reporting.html import read_curves

    curves = read_curves(ema_run[0])
    # epoch 0 was logged by the first session, epoch 1 by the resumed one
    assert [x for x, _ in curves["val_elbo"]] == [0.0, 1.0]
    assert [x for x, _ in curves["train_loss_epoch"]] == [0.0, 1.0]


class BatchLog(L.Callback):
    """(global step, fingerprint of every image) of each training batch, as the step sees it."""

    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        x = batch[0].flatten(1).double()
        fingerprint = x @ torch.arange(1, x.shape[1] + 1, dtype=torch.float64)
        self.batches.append((trainer.global_step, [round(v, 2) for v in fingerprint.tolist()]))


def _tiny_config(data, run_dir, **train):
    from facevae.models.config import ModelConfig
    from facevae.training.config import TrainConfig

    model = ModelConfig(model="vae", latent_dim=8, width=1, image_size=32)
    settings = dict(data=str(data), run_dir=str(run_dir), epochs=2, batch_size=32, eval_k=2, eval_batches=1,
                    progress=False, patience=0, checkpoint_every_steps=2, flip=True)
    return RunConfig(model, TrainConfig(**{**settings, **train}))


@pytest.mark.parametrize("on_device", [False, True], ids=["loader", "on-device"])
def test_mid_epoch_resume_trains_the_batches_an_uninterrupted_run_trains(data, tmp_path, on_device):
    from facevae.training.run import train

    whole = BatchLog()
    train(_tiny_config(data, tmp_path / "whole", on_device=on_device), callbacks=[whole])
    steps_per_epoch = len({s for s, _ in whole.batches}) // 2
    crash_step = steps_per_epoch + 3  # in the second epoch, one step after the checkpoint at +2

    first, second = BatchLog(), BatchLog()
    killed = _tiny_config(data, tmp_path / "killed", on_device=on_device)
    with pytest.raises(SimulatedCrash):
        train(killed, callbacks=[first, CrashAt(crash_step)])
    saved = safe_load(tmp_path / "killed" / "checkpoints" / "last.ckpt")["global_step"]
    assert steps_per_epoch < saved < crash_step  # a checkpoint from the middle of the second epoch
    train(RunConfig.load(tmp_path / "killed" / "config.yaml"), resume=True, callbacks=[second])

    assert second.batches[0][0] == saved  # it goes on at the first step the checkpoint had not done
    assert second.batches == whole.batches[saved:]  # the same images, in the same order
    a, b = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("whole", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # and so the same weights


def test_last_checkpoint_is_of_the_last_step_of_every_epoch(data, tmp_path):
    from facevae.training.run import train

    metrics = train(_tiny_config(data, tmp_path / "run", epochs=1, checkpoint_every_steps=2))
    assert metrics["global_step"] % 2 == 1  # no multiple of checkpoint_every_steps: only the epoch's end saves it
    assert safe_load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == metrics["global_step"]


def test_resume_writes_into_the_run_given_not_the_one_its_config_names(data, tmp_path, monkeypatch):
    import shutil

    original = tmp_path / "original"
    assert train_cli(data, original, "--model", "vae", "--epochs", "1") == 0
    before = {p.name: p.read_bytes() for p in [original / "model.safetensors", original / "config.yaml",
                                               original / "metrics.json", original / "checkpoints" / "last.ckpt"]}
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(original, copy)
    config = (copy / "config.yaml").read_text().replace("epochs: 1", "epochs: 2")
    (copy / "config.yaml").write_text(config)
    monkeypatch.chdir(tmp_path / "elsewhere")  # a relative RUN, from another folder
    assert main(["train", "--resume", "copy", "--no-progress"]) == 0
    metrics = json.loads((copy / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    assert RunConfig.load(copy / "config.yaml").train.run_dir == "copy"
    for path in [original / "model.safetensors", original / "config.yaml", original / "metrics.json",
                 original / "checkpoints" / "last.ckpt"]:
        assert path.read_bytes() == before[path.name], f"{path} was rewritten"


def test_resume_trains_longer_with_epochs_and_refuses_any_other_setting(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(data, run, "--model", "vae", "--epochs", "1") == 0
    weights = (run / "model.safetensors").read_bytes()
    assert main(["train", "--resume", str(run), "--beta", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--beta cannot change them" in err and err.count("\n") == 1
    assert (run / "model.safetensors").read_bytes() == weights  # refused before anything was touched

    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    assert RunConfig.load(run / "config.yaml").train.epochs == 2  # the run's record says what it now is


class LrLog(L.Callback):
    def __init__(self):
        self.rates = {}

    def on_train_epoch_start(self, trainer, pl_module):
        self.rates[trainer.current_epoch] = trainer.optimizers[0].param_groups[0]["lr"]


@pytest.mark.parametrize("warmup", [0, 3], ids=["cosine", "warmup-cosine"])
def test_a_run_resumed_with_more_epochs_anneals_over_them_as_if_planned_so(data, tmp_path, warmup):
    """The cosine restored from the checkpoint was planned for 2 epochs: periodic, it would climb back to --lr."""
    from facevae.training.run import train

    whole, resumed = LrLog(), LrLog()
    train(_tiny_config(data, tmp_path / "whole", epochs=4, lr_warmup_steps=warmup), callbacks=[whole])
    train(_tiny_config(data, tmp_path / "resumed", epochs=2, lr_warmup_steps=warmup))
    longer = RunConfig.load(tmp_path / "resumed" / "config.yaml")
    longer.train.epochs = 4
    train(longer, resume=True, callbacks=[resumed])
    assert sorted(resumed.rates) == [2, 3]
    if not warmup:
        assert whole.rates[2] == pytest.approx(0.5 * longer.train.lr)  # half-way down a 4-epoch cosine
    for epoch in (2, 3):
        assert resumed.rates[epoch] == pytest.approx(whole.rates[epoch], rel=1e-6), epoch


def test_training_longer_retires_the_analysis_and_scores_of_the_model_it_replaces(data, tmp_path, capsys):
    from facevae.training.run import RETIRED, train

    run = tmp_path / "run"
    train(_tiny_config(data, run, epochs=1))
    (run / "analysis").mkdir()
    (run / "analysis" / "dims.json").write_text("{}")
    stored = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**stored, "disentanglement": {"scores": {"mig": 0.5}}}))
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # evaluated again: the same model
    assert "disentanglement" in json.loads((run / "metrics.json").read_text()) and not (run / RETIRED).exists()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert "the exported model changed" in capsys.readouterr().err
    assert "disentanglement" not in json.loads((run / "metrics.json").read_text())
    assert not (run / "analysis").exists() and (run / RETIRED / "dims.json").is_file()
    assert json.loads((run / RETIRED / "disentanglement.json").read_text()) == {"scores": {"mig": 0.5}}


def test_a_run_that_died_before_its_first_checkpoint_can_be_started_again(data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {}\ntrain: {}\n")  # what a start killed before its first step leaves
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert "start it again" in capsys.readouterr().err
    assert train_cli(data, run, "--model", "vae", "--epochs", "1") == 0
    assert train_cli(data, run, "--model", "vae", "--epochs", "1") == 2  # a finished run is not overwritten
    assert "already holds a run" in capsys.readouterr().err


def test_the_update_guard_skips_spikes_and_non_finite_norms_and_stops_a_broken_run():
    from facevae.training.update_guard import PATIENCE, WARMUP, UpdateGuard

    guard = UpdateGuard(10.0)
    assert not guard.accept(float("nan"))  # non-finite: skipped from the first update on
    assert all(guard.accept(1.0 + 0.01 * i) for i in range(WARMUP))
    assert guard.accept(9.0) and not guard.accept(50.0)  # ten times the median is a spike
    assert guard.skipped == 2 and not guard.broken
    restored = UpdateGuard(10.0)
    restored.load_state_dict(guard.state_dict())
    assert list(restored.norms) == list(guard.norms) and restored.skipped == 2
    for _ in range(PATIENCE):
        guard.accept(float("inf"))
    assert guard.broken


def test_with_skip_updates_a_few_non_finite_losses_are_skipped_and_counted(data, tmp_path, monkeypatch):
    from facevae.models.conv import ConvVAE

    real, calls = ConvVAE.loss, {"n": 0}

    def sometimes_nan(self, x, c=None, kl_weight=None, step=None):
        terms = real(self, x, c, kl_weight, step)
        if self.training:
            calls["n"] += 1
            if calls["n"] in (3, 8):
                terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(ConvVAE, "loss", sometimes_nan)
    run = tmp_path / "run"
    assert train_cli(data, run, "--model", "vae", "--skip-updates", "10") == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_updates"] == 2 and calls["n"] > 8  # the run went on past both
    state = load_file(str(run / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
