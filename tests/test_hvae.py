"""The hierarchical VAE: its groups, its residual posterior, its sampling, and the pipeline on an hvae run."""

from __future__ import annotations

import json
import math

import pytest
import torch

import facevae
from facevae.cli import main
from facevae.models import ModelConfig, build_model
from facevae.models.base import VAEBase
from facevae.training.presets import PRESETS

TINY_HVAE = ["--model", "hvae", "--image-size", "32", "--hvae-groups", "1,1", "--hvae-channels", "4",
             "--hvae-latent-channels", "2", "--mixtures", "3", "--batch-size", "32", "--eval-k", "2",
             "--eval-batches", "1", "--no-progress", "--epochs", "2", "--skip-updates", "10"]


def tiny(**kw) -> ModelConfig:
    settings = dict(model="hvae", image_size=32, hvae_groups=[2, 1], hvae_channels=4, hvae_latent_channels=2,
                    mixtures=3)
    return ModelConfig(**{**settings, **kw})


def model_settings(preset: str) -> dict:
    return {k: v for k, v in PRESETS[preset].settings.items() if k in ModelConfig.__dataclass_fields__}


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_at_every_size_has_its_groups_shapes_and_kl(preset, size):
    config = ModelConfig(**{**model_settings(preset), "image_size": size})
    torch.manual_seed(0)
    model = build_model(config).eval()
    groups = model.latent_groups
    assert sum(g.size for g in groups) == model.latent_dim == config.latent_units
    assert groups[0].shape[1] == min(g.shape[1] for g in groups)  # the top group is the coarsest
    assert [g.offset for g in groups] == [sum(h.size for h in groups[:i]) for i in range(len(groups))]
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        latents = model.encode(x)
        terms = model.loss(x, kl_weight=1.0)
        images = model.decode(latents.codes()).image()
    assert latents.mean.shape == latents.std.shape == (2, model.latent_dim)
    assert terms["kl_per_group"].shape == (len(groups),) and (terms["kl_per_group"] >= 0).all()
    assert all(torch.isfinite(v).all() for v in terms.values())
    assert images.shape == (2, 3, size, size) and 0 <= images.min() and images.max() <= 1


def test_the_residual_posterior_is_the_prior_when_the_encoder_adds_no_correction():
    torch.manual_seed(0)
    model = build_model(tiny(hvae_groups=[2, 2])).eval()
    with torch.no_grad():
        for conv in list(model.posteriors)[1:]:  # every group below the top
            conv.parametrizations.weight.original0.zero_()
            conv.bias.zero_()
        x = torch.rand(3, 3, 32, 32)
        latents = model.encode(x)
        _, kl_groups, _ = model._stochastic(x, None)
    lower = slice(model.latent_groups[1].offset, None)
    # in prior coordinates q = N(0, 1) below the top: mean 0, s.d. 1, no KL
    torch.testing.assert_close(latents.mean[:, lower], torch.zeros_like(latents.mean[:, lower]))
    torch.testing.assert_close(latents.std[:, lower], torch.ones_like(latents.std[:, lower]))
    assert float(kl_groups[:, 1:].abs().max()) < 1e-5 and float(kl_groups[:, 0].min()) > 0


def test_codes_decode_back_to_the_posterior_mean_path_and_kl_is_the_models():
    torch.manual_seed(0)
    model = build_model(tiny()).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        latents = model.encode(x)
        params, _ = model._top_down(x, None, lambda g, prior, q: (q.mu, None))  # every z at its posterior mean
        from facevae.models.likelihoods import DiscretizedMixtureLogistic

        direct = DiscretizedMixtureLogistic(params, model.config.mixtures).image()
        torch.testing.assert_close(model.decode(latents.codes()).image(), direct, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.reconstruct(x), direct, atol=1e-5, rtol=1e-4)
        # the KL of the mean path's standardised posteriors is the analytic KL of each group, on that path
        kl = latents.kl_per_unit()
    assert kl.shape == (4, model.latent_dim) and (kl >= 0).all()


def test_sampling_readjusts_batchnorm_only_while_it_lasts_and_temperature_scales_the_draws():
    torch.manual_seed(0)
    model = build_model(tiny()).eval()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_var.clone() for m in norms]
    with model.sampling(0.5):
        inside = [m.running_var.clone() for m in norms]
    assert any(not torch.equal(a, b) for a, b in zip(before, inside))  # the decoder's statistics were re-estimated
    assert all(torch.equal(a, m.running_var) for a, m in zip(before, norms)) and not model.training
    images = model.sample(5, temperature=0.7, generator=torch.Generator().manual_seed(1))
    again = model.sample(5, temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert images.shape == (5, 3, 32, 32) and torch.equal(images, again)


def test_importance_weighted_bound_is_above_the_elbo():
    torch.manual_seed(0)
    model = build_model(tiny()).eval()
    x = torch.rand(4, 3, 32, 32)
    torch.manual_seed(1)
    with torch.no_grad():
        elbo = float(model.loss(x, kl_weight=1.0)["elbo"])
        iw = float(model.importance_log_likelihood(x, k=32).mean())
    assert iw > elbo - 5 and math.isfinite(iw)


def test_a_tiny_hierarchical_model_overfits_a_handful_of_images():
    torch.manual_seed(0)
    model = build_model(tiny(spectral_lambda=0.01))
    ramp = torch.linspace(0, 1, 32)
    x = torch.stack([torch.stack([ramp.view(1, 32).expand(32, 32), ramp.view(32, 1).expand(32, 32),
                                  torch.full((32, 32), i / 3)]) for i in range(4)])  # four noiseless images
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    bits = []
    for _ in range(200):
        opt.zero_grad()
        terms = model.loss(x, kl_weight=1.0)
        terms["loss"].backward()
        opt.step()
        bits.append(float(terms["bits_per_dim"]))
    assert sorted(bits[-10:])[5] < 0.7 * bits[0], (bits[0], bits[-10:])  # the median of the last ten steps


def test_kl_balancing_reweights_only_during_the_warm_up():
    model = build_model(tiny(hvae_groups=[2, 2]))
    kl = torch.tensor([[10.0, 1.0, 0.1, 0.1], [12.0, 1.0, 0.1, 0.3]])
    torch.testing.assert_close(model.balanced_kl(kl, 1.0), kl.sum(1))  # warm-up over: the plain sum
    balanced = model.balanced_kl(kl, 0.3)
    assert not torch.allclose(balanced, kl.sum(1))
    # groups with little KL weigh more than their share while warming up (so they are not switched off)
    coeff = balanced / kl.sum(1)
    assert coeff.shape == (2,) and torch.isfinite(coeff).all()


# --- the pipeline on a tiny hvae run ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def hvae_run(tmp_path_factory, synth_data):
    run = tmp_path_factory.mktemp("runs") / "hvae"
    assert main(["train", "--data", str(synth_data), "--run-dir", str(run), *TINY_HVAE]) == 0
    return run


def test_an_hvae_run_exports_loads_without_lightning_and_samples(hvae_run):
    metrics = json.loads((hvae_run / "metrics.json").read_text())
    assert 0 < metrics["test"]["test_bits_per_dim"] < 12 and metrics["skipped_updates"] >= 0
    assert metrics["test"]["test_bits_per_dim_iw"] <= metrics["test"]["test_bits_per_dim"] + 0.05
    model = facevae.load(hvae_run)
    assert isinstance(model, VAEBase) and not model.training and model.config.model == "hvae"
    assert model.sample(3, temperature=0.8).shape == (3, 3, 32, 32)
    from safetensors.torch import load_file

    state = load_file(str(hvae_run / "model.safetensors"))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_every_analysis_command_takes_an_hvae_run(hvae_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "hvae"
    shutil.copytree(hvae_run, run)
    top = facevae.load(run).latent_groups[0].name
    for argv in (["dims", str(run)], ["dims", str(run), "--group", "16x16.0"], ["traverse", str(run), "--faces", "2",
                 "--dims", "0,1"], ["reconstruct", str(run), "--n", "4"], ["sample", str(run), "--n", "4",
                 "--temperature", "0.6"], ["edit", str(run), "--index", "0", "--set", "Smiling=1"],
                 ["metrics", str(run), "--n", "40", "--n-eval", "20", "--batch-size", "4", "--metrics",
                  "beta_vae,mig"], ["probe", str(run), "--max-train", "60"], ["report", str(run)]):
        assert main(argv) == 0, argv
    dims = json.loads((run / "analysis" / "dims.json").read_text())
    assert dims["group"] == top and len(dims["groups"]) == 2 and dims["latent_dim"] == dims["groups"][0]["units"]
    assert json.loads((run / "analysis" / "dims_16x16.0.json").read_text())["group"] == "16x16.0"
    assert json.loads((run / "analysis" / "traverse.json").read_text())["group"] == top
    assert json.loads((run / "metrics.json").read_text())["disentanglement"]["settings"]["group"] == top
    assert json.loads((run / "analysis" / "probe.json").read_text())["group"] == top
    page = (run / "report.html").read_text()
    assert "Latent groups, top first" in page and "samples at several temperatures" in page
    assert main(["traverse", str(run), "--group", "nope"]) == 2
    assert "no latent group 'nope'" in capsys.readouterr().err


def test_a_fixed_seed_gives_the_same_hvae_weights(synth_data, tmp_path):
    from safetensors.torch import load_file

    for name in ("a", "b"):
        argv = ["train", "--data", str(synth_data), "--run-dir", str(tmp_path / name), *TINY_HVAE, "--epochs", "1"]
        assert main(argv) == 0
    a, b = (load_file(str(tmp_path / n / "model.safetensors")) for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("argv, message", [
    (["--hvae-groups", "1,1,1,1,1"], "leave a 32x32 image a 1x1 top scale"),
    (["--hvae-groups", "2,0"], "--hvae-groups must be positive"),
    (["--hvae-channels", "0"], "--hvae-channels must be >= 1"),
    (["--mixtures", "0"], "--mixtures must be >= 1"),
    (["--likelihood", "gaussian"], "--likelihood gaussian is for the flat models"),
    (["--preset", "hvae-tpu"], "unknown --preset 'hvae-tpu'"),
    (["--skip-updates", "0.5"], "--skip-updates is a factor above 1"),
    (["--lr-warmup-steps", "10", "--lr-schedule", "plateau"], "--lr-warmup-steps works with"),
])
def test_bad_hvae_settings_are_one_line_errors(synth_data, tmp_path, capsys, argv, message):
    run = tmp_path / "run"
    assert main(["train", "--data", str(synth_data), "--run-dir", str(run), *TINY_HVAE, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("facevae: error:") and message in err and "\n" not in err, err
    assert not run.exists()


def test_a_preset_fills_in_what_the_command_line_did_not_type():
    from facevae.cli import build_parser
    from facevae.cli.train import run_config_from_args
    from facevae.common.settings import given_dests

    argv = ["train", "--data", "d", "--run-dir", "r", "--preset", "hvae-cpu32", "--lr", "0.003", "--model", "vae",
            "--latent-dim", "8"]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.typed_settings = given_dests(parser, argv)
    assert {"lr", "model", "latent_dim", "data"} <= args.typed_settings and "batch_size" not in args.typed_settings
    config = run_config_from_args(args)
    preset = PRESETS["hvae-cpu32"].settings
    assert config.train.lr == 0.003 and config.model.model == "vae"  # typed
    assert config.train.batch_size == preset["batch_size"] and config.model.image_size == preset["image_size"]


def test_a_gpu_preset_warns_when_the_run_will_have_no_gpu(monkeypatch, capsys):
    from facevae.cli import build_parser
    from facevae.cli.train import run_config_from_args
    from facevae.common.settings import given_dests

    def config_of(*extra):
        argv = ["train", "--data", "d", "--run-dir", "r", *extra]
        parser = build_parser()
        args = parser.parse_args(argv)
        args.typed_settings = given_dests(parser, argv)
        run_config_from_args(args)
        return capsys.readouterr().err

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "--preset hvae-gpu64 is for a GPU and this run has none" in config_of("--preset", "hvae-gpu64")
    assert "is for a GPU" in config_of("--preset", "hvae-gpu64", "--accelerator", "cpu")
    assert "warning" not in config_of("--preset", "hvae-cpu32") + config_of("--preset", "hvae-gpu64", "--accelerator", "gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "warning" not in config_of("--preset", "hvae-gpu64")
