"""``facevae metrics``: the disentanglement suite of a trained run, written into its metrics.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from facevae.cli import main

QUICK = ["--n", "30", "--n-eval", "12", "--batch-size", "4"]


@pytest.fixture
def cvae_copy(cvae_run, tmp_path) -> Path:
    """The shared run is read-only; `metrics` writes into its run directory."""
    return Path(shutil.copytree(cvae_run, tmp_path / "cvae"))


def test_metrics_on_synthetic_faces_writes_the_suite(cvae_copy, capsys):
    before = json.loads((cvae_copy / "metrics.json").read_text())
    assert main(["metrics", str(cvae_copy), *QUICK, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = json.loads((cvae_copy / "metrics.json").read_text())
    assert stored["disentanglement"] == printed and stored["test"] == before["test"]  # added, nothing lost
    scores = printed["scores"]
    expected = {"beta_vae_train", "beta_vae_eval", "factor_vae_train", "factor_vae_eval", "mig",
                "dci_disentanglement", "dci_completeness", "sap", "modularity"}
    assert printed["labels"] == "factors" and expected <= set(scores)
    assert all(0.0 <= scores[k] <= 1.0 for k in expected), scores
    assert printed["settings"]["n"] == 30 and printed["settings"]["factor_vae_active_dims"] >= 0


def test_metrics_subset_and_table(cvae_copy, capsys):
    assert main(["metrics", str(cvae_copy), *QUICK, "--metrics", "mig,sap"]) == 0
    out = capsys.readouterr().out
    assert "against ground-truth factors" in out and "mig" in out and "beta_vae" not in out
    stored = json.loads((cvae_copy / "metrics.json").read_text())["disentanglement"]
    assert set(stored["scores"]) == {"mig", "sap"}


def test_rendering_in_worker_processes_leaves_every_score_unchanged(cvae_run, monkeypatch):
    """The suite renders and encodes in one DataLoader worker per thread it may use; alone, the same numbers."""
    import torch

    from facevae.metrics import run

    workers = []
    encode_batches = run._LabelledFaces.encode_batches
    monkeypatch.setattr(run._LabelledFaces, "encode_batches",
                        lambda self, *a: workers.append(self.workers) or encode_batches(self, *a))
    settings = dict(n=60, n_eval=30, batch_size=8, seed=3, write=False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ahead = run.compute_disentanglement(cvae_run, **settings)
        assert workers and set(workers) == {2}
        torch.set_num_threads(1)
        assert run.compute_disentanglement(cvae_run, **settings) == ahead and set(workers) == {2, 0}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def attribute_run(cvae_copy, synth_data, tmp_path) -> Path:
    """The same run, pointed at its data without the factors: CelebA's situation, without training again."""
    import yaml

    data = Path(shutil.copytree(synth_data, tmp_path / "no_factors"))
    (data / "factors.npy").unlink()
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps(meta | {"factor_names": [], "factor_sizes": []}))
    config = yaml.safe_load((cvae_copy / "config.yaml").read_text())
    config["train"]["data"] = str(data)
    (cvae_copy / "config.yaml").write_text(yaml.safe_dump(config))
    return cvae_copy


def test_metrics_without_factors_use_attributes_as_weak_labels(attribute_run, capsys):
    assert main(["metrics", str(attribute_run), *QUICK, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["labels"] == "attributes"
    assert set(result["scores"]) >= {"mig", "dci_disentanglement", "sap", "modularity"}
    assert not any(k.startswith(("beta_vae", "factor_vae")) for k in result["scores"])  # "all": what applies
    assert {row["name"] for row in result["attributes"]} == set(json.loads(
        (attribute_run / "model.json").read_text())["attribute_names"])
    assert main(["metrics", str(attribute_run), *QUICK, "--metrics", "beta_vae"]) == 2
    assert "needs ground-truth factors" in capsys.readouterr().err


def test_library_function_does_not_write_when_asked(cvae_copy):
    from facevae.metrics.run import compute_disentanglement

    result = compute_disentanglement(cvae_copy, "dci", n=30, n_eval=10, write=False)
    assert set(result["scores"]) >= {"dci_disentanglement", "dci_completeness"}
    assert "disentanglement" not in json.loads((cvae_copy / "metrics.json").read_text())


def test_bad_metrics_input_is_a_one_line_error(cvae_copy, tmp_path, capsys):
    for args, message in [([str(cvae_copy), "--metrics", "mig,bogus"], "unknown metric 'bogus'"),
                          ([str(tmp_path / "nowhere")], "not a run directory"),
                          ([str(cvae_copy), "--n", "0"], "--n must be 1 to 100,000 points, got 0"),
                          ([str(cvae_copy), "--n-eval", str(10**9)], "--n-eval must be 1 to 100,000 points"),
                          ([str(cvae_copy), "--batch-size", "0"], "--batch-size must be at least 1")]:
        assert main(["metrics", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert "disentanglement" not in json.loads((cvae_copy / "metrics.json").read_text())


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["metrics", "--help"])
    assert exit_info.value.code == 0 and "example:\n  facevae metrics " in capsys.readouterr().out


def test_a_seed_numpy_cannot_take_is_one_line_naming_the_flag(cvae_copy, capsys):
    assert main(["metrics", str(cvae_copy), *QUICK, "--seed", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--seed must be between 0 and" in err and "\n" not in err, err


def test_a_conditional_run_on_fake_celeba_gets_the_sampling_metrics(tmp_path, capsys):
    """Its data has all 40 of CelebA's attributes, of which the renderer derives only some from the factors."""
    from conftest import TINY_TRAIN
    from facevae.data.fake_celeba import write_fake_celeba

    raw = write_fake_celeba(tmp_path / "raw", 60, seed=1, progress=False, workers=1)
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "prepare", str(raw), str(data), "--size", "32", "--workers", "1"]) == 0
    assert main(["train", "--data", str(data), "--run-dir", str(run), "--model", "cvae", *TINY_TRAIN]) == 0
    capsys.readouterr()
    assert main(["metrics", str(run), *QUICK, "--metrics", "beta_vae", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["labels"] == "factors" and 0.0 <= printed["scores"]["beta_vae_eval"] <= 1.0
