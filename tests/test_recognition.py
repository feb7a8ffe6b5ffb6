"""Attribute recognition: classifier training/eval/resume, weights, augmentation, thresholds, probes."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facevae import cli
from facevae.recognition.augment import BatchAugment, affine_from_params, augment_spec
from facevae.recognition.backbones import AttributeClassifier, WeightsError, imagenet_weights
from facevae.recognition.evaluate import attribute_metrics, best_threshold, choose_thresholds

TINY = ["--epochs", "1", "--batch-size", "32", "--width", "8", "--no-progress", "--checkpoint-every-steps", "2"]


def run(*argv) -> int:
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="session")
def cls_run(tmp_path_factory, synth_data) -> Path:
    """A tiny finished small-CNN classifier on the session's synthetic faces (evaluated). Read-only."""
    from facevae.recognition import ClassifierConfig, train_classifier

    run_dir = tmp_path_factory.mktemp("cls") / "small"
    train_classifier(ClassifierConfig(data=str(synth_data), run_dir=str(run_dir), epochs=2, batch_size=32, width=8,
                                      checkpoint_every_steps=2, progress=False))
    return run_dir


def _resnet18_state(seed: int = 0) -> dict:
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


# --- training, evaluation, resume ---------------------------------------------------------------------

def test_classifier_run_directory_eval_and_resume(cls_run, tmp_path, capsys):
    for name in ("config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "model.safetensors", "model.json",
                 "metrics.json", "logs/csv/metrics.csv", "analysis/eval.json", "analysis/eval.png", "analysis/eval.md"):
        assert (cls_run / name).is_file(), name
    metrics = json.loads((cls_run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    assert {"val_loss", "val_acc", "train_loss_epoch"} <= set(metrics["epochs"][-1])
    assert 0 <= metrics["test"]["mean"]["accuracy"] <= 1

    result = json.loads((cls_run / "analysis" / "eval.json").read_text())
    assert len(result["attributes"]) == 17 and result["thresholds_from"] == "valid"
    row = result["attributes"][0]
    assert {"accuracy", "balanced_accuracy", "f1", "roc_auc", "threshold", "majority", "accuracy_at_0.5"} <= set(row)
    assert result["mean"]["accuracy"] == pytest.approx(np.mean([r["accuracy"] for r in result["attributes"]]))
    with Image.open(cls_run / "analysis" / "eval.png") as chart:
        assert chart.height > 300  # one row of bars per attribute

    run_dir = Path(shutil.copytree(cls_run, tmp_path / "copy"))
    assert run("classify", "eval", run_dir, "--threshold-by", "balanced_accuracy", "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert "| **mean** |" in out and "balanced_accuracy" in out
    balanced = json.loads((run_dir / "analysis" / "eval.json").read_text())
    assert balanced["threshold_by"] == "balanced_accuracy"

    # Resume: continue from last.ckpt to a later epoch; the step count carries on.
    from facevae.recognition import load_classifier, resume_classifier

    steps = metrics["global_step"]
    resumed = resume_classifier(run_dir, epochs=3, evaluate=False)
    assert resumed["global_step"] == steps * 3 // 2
    assert [e["epoch"] for e in resumed["epochs"]] == [0, 1, 2]
    schedule = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["lr_schedulers"][0]
    assert schedule["T_max"] == resumed["global_step"]  # annealed over the 3 epochs, not the 2 first planned
    assert run("classify", "train", "--resume", run_dir, "--backbone", "resnet18") == 2
    assert "--backbone cannot change them" in capsys.readouterr().err
    model = load_classifier(run_dir)
    assert model.attribute_names == [r["attribute"] for r in result["attributes"]]
    assert not model.training and model(torch.rand(2, 3, 64, 64)).shape == (2, 17)


def test_exported_small_classifier_as_weights_path_predicts_the_same(cls_run):
    from facevae.recognition import load_classifier

    # A small CNN's PATH is one of our own runs: same heads, same (x - 0.5) / 0.5 input, same answers.
    model = AttributeClassifier("small", 17, input_size=64, pretrained=True, width=8)
    info = model.load_backbone_weights(str(cls_run / "model.safetensors"))
    assert info["head_initialised"] == [] and not model.pretrained
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), load_classifier(cls_run)(x), atol=1e-6)


def test_attribute_subset_heavy_augment_pos_weight(synth_data, tmp_path):
    run_dir = tmp_path / "sub"
    assert run("classify", "train", "--data", synth_data, "--run-dir", run_dir, *TINY, "--attributes", "Smiling,Male",
               "--augment", "heavy", "--balance", "pos-weight", "--limit-train-batches", "2", "--no-eval") == 0
    from facevae.recognition.config import ClassifierConfig
    from facevae.training.checkpoints import safe_load

    config = ClassifierConfig.load(run_dir / "config.yaml")
    assert config.attributes == ["Male", "Smiling"]  # the dataset's order
    assert config.augment == "heavy" and config.image_size == 64
    hparams = safe_load(run_dir / "checkpoints" / "last.ckpt")["hyper_parameters"]
    assert len(hparams["pos_weight"]) == 2 and all(w > 0 for w in hparams["pos_weight"])
    assert json.loads((run_dir / "model.json").read_text())["attribute_names"] == ["Male", "Smiling"]


def test_bad_input_is_one_clear_error_and_writes_nothing(synth_data, tmp_path, capsys):
    run_dir = tmp_path / "bad"
    assert run("classify", "train", "--data", synth_data, "--run-dir", run_dir, "--backbone", "resnet19", *TINY) == 2
    err = capsys.readouterr().err
    assert "unknown backbone 'resnet19'" in err and "did you mean resnet18" in err and err.count("\n") == 1
    assert run("classify", "train", "--data", synth_data, "--run-dir", run_dir, "--attributes", "Smilling,Male", *TINY) == 2
    err = capsys.readouterr().err
    assert "unknown attribute(s): Smilling" in err and err.count("\n") == 1
    assert run("classify", "train", "--data", synth_data, "--run-dir", run_dir, "--weights", "imagenet", *TINY) == 2
    assert "no ImageNet weights for the 'small' backbone" in capsys.readouterr().err
    assert run("classify", "train", "--data", synth_data, "--run-dir", run_dir, "--weights", tmp_path / "nope.pth", *TINY) == 2
    assert "weights file not found" in capsys.readouterr().err
    assert run("classify", "train", "--data", synth_data, "--run-dir", run_dir, "--image-size", "100000", *TINY) == 2
    assert "--image-size 100000: at most 1024" in capsys.readouterr().err
    assert not run_dir.exists()
    assert run("classify", "eval", tmp_path) == 2
    assert "not a run directory" in capsys.readouterr().err


# --- weights ---------------------------------------------------------------------------------------------

def test_weights_path_is_loaded_and_frozen_stage_keeps_it(synth_data, tmp_path):
    state = _resnet18_state(seed=3)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    run_dir = tmp_path / "r18"
    assert run("classify", "train", "--data", synth_data, "--run-dir", run_dir, "--backbone", "resnet18",
               "--weights", path, "--image-size", "32", "--freeze-epochs", "1", "--limit-train-batches", "2",
               "--limit-val-batches", "1", "--attributes", "Smiling,Male,Eyeglasses", *TINY, "--no-eval") == 0
    from safetensors.torch import load_file

    trained = load_file(str(run_dir / "model.safetensors"))
    # The whole epoch was the head-only stage: backbone weights and batch-norm statistics are the file's.
    for key in ("conv1.weight", "layer3.1.conv2.weight", "layer1.0.bn1.running_mean", "layer4.1.bn2.running_var"):
        assert torch.equal(trained["net." + key], state[key]), key
    assert trained["net.fc.weight"].shape == (3, 512)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["weights"]["tensors_loaded"] > 100 and metrics["weights"]["source"] == str(path)

    model = AttributeClassifier("resnet50", 3, input_size=32, pretrained=True, init=False)
    with pytest.raises(WeightsError, match="do not fit the resnet50 backbone.*another shape"):
        model.load_backbone_weights(str(path))


def test_mismatched_weights_via_cli_is_one_line(synth_data, tmp_path, capsys):
    path = tmp_path / "r18.pth"
    torch.save(_resnet18_state(), path)
    run_dir = tmp_path / "r50"
    assert run("classify", "train", "--data", synth_data, "--run-dir", run_dir, "--backbone", "resnet50",
               "--weights", path, "--image-size", "32", *TINY) == 2
    err = capsys.readouterr().err
    assert "do not fit the resnet50 backbone" in err and err.count("\n") == 1
    assert not run_dir.exists()


def test_imagenet_offline_fails_fast_and_uses_the_cache(synth_data, tmp_path, monkeypatch, capsys):
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)  # torch.hub's real download path, made to fail
    run_dir = tmp_path / "net"
    start = time.perf_counter()
    assert run("classify", "train", "--data", synth_data, "--run-dir", run_dir, "--backbone", "resnet18",
               "--weights", "imagenet", *TINY) == 2
    assert time.perf_counter() - start < 20
    err = capsys.readouterr().err
    assert calls and "cannot download the ImageNet weights of resnet18" in err and "--weights PATH" in err
    assert err.count("\n") == 1 and not run_dir.exists()

    # With the file in torch.hub's cache (put there by an earlier download), no network is needed.
    state = _resnet18_state(seed=5)
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache / imagenet_weights("resnet18").url.rsplit("/", 1)[-1])
    model = AttributeClassifier("resnet18", 4, input_size=32, pretrained=True, init=False)
    info = model.load_backbone_weights("imagenet")
    assert info["source"] == "imagenet" and info["head_initialised"] == ["fc.weight", "fc.bias"]
    assert torch.equal(model.net.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    assert len(calls) == 1


def test_inception_v3_at_299_with_auxiliary_head_and_frozen_stage():
    torch.manual_seed(0)
    model = AttributeClassifier("inception_v3", 3, input_size=299, pretrained=True, init=False)
    assert model.net.transform_input  # ImageNet normalisation → the Google weights' own
    model.set_backbone_frozen(True)
    model.train()
    assert not model.net.Mixed_5b.branch1x1.bn.training and model.net.fc.training
    seen = []
    model.net.Conv2d_1a_3x3.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    logits, aux = model(torch.rand(2, 3, 64, 64), with_aux=True)
    assert seen[0] == (2, 3, 299, 299) and logits.shape == aux.shape == (2, 3)
    (F.binary_cross_entropy_with_logits(logits, torch.ones(2, 3)) + 0.4 * aux.mean()).backward()
    assert model.net.fc.weight.grad is not None and model.net.AuxLogits.fc.weight.grad is not None
    assert model.net.Conv2d_1a_3x3.conv.weight.grad is None  # frozen
    model.eval()
    with torch.no_grad():
        logits, aux = model(torch.rand(1, 3, 64, 64), with_aux=True)
    assert aux is None and logits.shape == (1, 3)
    with pytest.raises(ValueError, match="inception_v3 needs --image-size 299"):
        AttributeClassifier("inception_v3", 3, input_size=128)


# --- augmentation -----------------------------------------------------------------------------------------

def _apply(x, **params):
    n = len(x)
    p = dict(rotation_deg=torch.zeros(n), scale=torch.ones(n), shear=torch.zeros(n), shift=torch.zeros(n, 2),
             flip=torch.ones(n))
    p.update(params)
    grid = F.affine_grid(affine_from_params(**p), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def test_batched_affine_matches_exact_transforms():
    import torchvision.transforms.v2.functional as TF

    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(_apply(x), x, atol=1e-6)
    assert torch.allclose(_apply(x, flip=-torch.ones(2)), x.flip(-1), atol=1e-6)
    shifted = _apply(x, shift=torch.tensor([[0.25, 0.0], [0.0, 0.25]]))  # 2 pixels right / down
    assert torch.allclose(shifted[0, :, :, 2:], x[0, :, :, :-2], atol=1e-6)
    assert torch.allclose(shifted[1, :, 2:, :], x[1, :, :-2, :], atol=1e-6)
    rotated = _apply(x, rotation_deg=torch.tensor([90.0, -90.0]))  # torchvision's direction
    assert torch.allclose(rotated[0], TF.rotate(x[0], 90.0), atol=1e-5)
    assert torch.allclose(rotated[1], TF.rotate(x[1], -90.0), atol=1e-5)


def test_batch_augment_draws_per_image_and_stays_in_range():
    x = torch.rand(1, 3, 32, 32).expand(16, 3, 32, 32).contiguous()
    heavy = BatchAugment("heavy")
    out = heavy(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert len({round(float(v), 4) for v in out.mean((1, 2, 3))}) == 16  # a different draw per image
    again = heavy(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert BatchAugment("none")(x) is x
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment_spec("extreme")


# --- thresholds, metrics, balancing -------------------------------------------------------------------------

def test_thresholds_and_metrics_agree_with_sklearn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random((400, 3)) < [0.5, 0.1, 0.0]).astype(np.uint8)
    p = np.clip(0.35 * y + rng.random((400, 3)) * 0.65, 0, 1)
    for rule, fn in (("accuracy", accuracy_score), ("balanced_accuracy", balanced_accuracy_score)):
        t = best_threshold(p[:, 1], y[:, 1], rule)
        grid = np.unique(p[:, 1])
        best = max(fn(y[:, 1], p[:, 1] > g) for g in np.concatenate([grid, [grid[0] - 1]]))
        assert fn(y[:, 1], p[:, 1] > t) == pytest.approx(best)
    assert best_threshold(p[:, 2], y[:, 2]) == 0.5  # one class only
    assert best_threshold(p[:, 0], y[:, 0], "fixed") == 0.5
    thresholds = choose_thresholds(p, y, "balanced_accuracy")
    rows = attribute_metrics(p, y, thresholds, ["a", "b", "c"])
    for j in range(2):
        pred = p[:, j] > thresholds[j]
        assert rows[j]["accuracy"] == pytest.approx(accuracy_score(y[:, j], pred))
        assert rows[j]["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y[:, j], pred))
        assert rows[j]["f1"] == pytest.approx(f1_score(y[:, j], pred))
        assert rows[j]["roc_auc"] == pytest.approx(roc_auc_score(y[:, j], p[:, j]), abs=1e-6)
    assert rows[2]["roc_auc"] is None and rows[2]["majority"] == 1.0


def test_balancing_helpers():
    from facevae.recognition.data import BalancedSampler, balanced_sample_weights, positive_weights

    y = np.zeros((1000, 2), np.uint8)
    y[:50, 0] = 1  # 5 % positive
    y[:, 1] = 1  # always positive
    w = positive_weights(y)
    assert w[0] == pytest.approx(19.0) and w[1] == 1.0
    sampler = BalancedSampler(balanced_sample_weights(y), seed=0)
    first = list(sampler)
    assert len(first) == 1000 and 0.35 < y[first, 0].mean() < 0.65
    assert first != list(sampler)  # a new draw next epoch ...
    sampler.set_epoch(0)
    assert first == list(sampler)  # ... fixed by (seed, epoch)


def test_sampler_balance_trains(synth_data, tmp_path):
    from facevae.recognition.config import ClassifierConfig
    from facevae.recognition.train import make_datamodule, resolve_config

    config = resolve_config(ClassifierConfig(data=str(synth_data), run_dir=str(tmp_path), balance="sampler",
                                             batch_size=64, attributes=["Eyeglasses"]))
    dm = make_datamodule(config)
    plain = dm.part_attributes("train")[:, 0].mean()
    drawn = torch.cat([y for _, y in dm.train_dataloader()])
    assert len(drawn) == len(dm.indices("train")) and drawn.mean() > max(2 * plain, 0.3)


# --- probes ---------------------------------------------------------------------------------------------------

def test_probe_on_vae_latents_compared_with_classifier(cvae_run, cls_run, tmp_path, capsys):
    from facevae.recognition import probe_run

    vae = Path(shutil.copytree(cvae_run, tmp_path / "cvae"))
    result = probe_run(vae, cls_run, max_train=150)
    for name in ("probe.json", "probe.png", "probe.md"):
        assert (vae / "analysis" / name).is_file()
    with Image.open(vae / "analysis" / "probe.png") as chart:
        assert chart.height > 300  # one row of bars per attribute
    saved = json.loads((vae / "analysis" / "probe.json").read_text())
    assert saved["probe"]["train_images"] == 150 and saved["latent_dim"] == 8 and saved["conditional"]
    assert len(saved["attributes"]) == 17 and all(r["in_condition"] for r in saved["attributes"])
    assert 0 <= saved["mean"]["accuracy"] <= 1
    assert saved["classifier"]["backbone"] == "small" and len(saved["classifier"]["attributes"]) == 17
    assert saved["classifier"]["notes"] == []
    assert "| **mean** |" in result["table_text"]

    assert run("probe", vae, "--threshold-by", "balanced_accuracy", "--max-train", "100") == 0
    assert "| **mean** |" in capsys.readouterr().out
    assert run("probe", cls_run) == 2
    assert "probe takes a VAE run" in capsys.readouterr().err


def test_a_classifier_run_given_to_a_vae_command_is_named_as_one(cls_run, capsys):
    import facevae
    from facevae.common.errors import RunError

    for command in (["metrics", cls_run], ["report", cls_run], ["train", "--resume", cls_run]):
        assert run(*command) == 2
        err = capsys.readouterr().err
        assert "an attribute-classifier run" in err and "not a VAE run" in err, command
    with pytest.raises(RunError, match="attribute-classifier run.*load_classifier"):
        facevae.load(cls_run)


def test_help_has_examples(capsys):
    for argv in (["classify", "--help"], ["classify", "train", "--help"], ["classify", "eval", "--help"],
                 ["probe", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert "example:" in capsys.readouterr().out


@pytest.mark.parametrize("argv, text", [
    (["classify", "eval", "{cls}", "--device", "bogus"], "--device 'bogus': not a device"),
    (["classify", "eval", "{cls}", "--device", "cuda:99"], "--device cuda:99: this machine has"),
    (["probe", "{vae}", "--C", "0"], "--C (the inverse L2 strength) must be > 0"),
    (["probe", "{vae}", "--seed", "-1"], "--seed must be between 0 and"),
], ids=["device-bogus", "device-missing", "C-0", "seed-negative"])
def test_a_bad_device_c_or_seed_is_one_line_naming_it(cls_run, cvae_run, capsys, argv, text):
    assert cli.main([a.format(cls=cls_run, vae=cvae_run) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert text in err and "\n" not in err, err
