"""reconstruct / sample / traverse / edit: their files, their numbers, and one-line errors on bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facevae.cli import main


# --- helpers ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cvae(tmp_path_factory, cvae_run) -> Path:
    """A writable copy of the session's conditional run (analysis writes into RUN/analysis)."""
    return Path(shutil.copytree(cvae_run, tmp_path_factory.mktemp("analysis") / "cvae"))


@pytest.fixture(scope="module")
def vae(tmp_path_factory, vae_run) -> Path:
    return Path(shutil.copytree(vae_run, tmp_path_factory.mktemp("analysis") / "vae"))


@pytest.fixture
def fresh_cvae(tmp_path, cvae_run) -> Path:
    return Path(shutil.copytree(cvae_run, tmp_path / "cvae"))


def assert_png(path, min_width=300, min_height=150) -> tuple[int, int]:
    path = Path(path)
    assert path.is_file(), path
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()
    with Image.open(path) as img:
        width, height = img.size
    assert width >= min_width and height >= min_height, (path, img.size)
    return width, height


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("facevae: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    return err


def position_with(run, attribute: str, value: int) -> int:
    column = run.data.attribute_names.index(attribute)
    positions = np.flatnonzero(run.data.part_attributes("test")[:, column] == value)
    assert len(positions), f"no test image with {attribute}={value}"
    return int(positions[0])


# --- reconstruct ---------------------------------------------------------------------------------------------
def test_reconstruct_writes_sheet_and_per_image_errors(cvae, capsys):
    assert main(["reconstruct", str(cvae), "--n", "10", "--offset", "2"]) == 0
    out = capsys.readouterr().out
    png, js = cvae / "analysis" / "reconstruct.png", cvae / "analysis" / "reconstruct.json"
    assert str(png) in out and str(js) in out
    assert_png(png, min_width=800, min_height=500)  # 8 columns of 128-pixel cells, 4 rows
    result = json.loads(js.read_text())
    assert len(result["images"]) == 10
    assert [e["position"] for e in result["images"]] == list(range(2, 12))
    mse = np.array([e["mse"] for e in result["images"]])
    assert np.all(np.isfinite(mse)) and np.all(mse > 0) and np.all(mse < 1)
    assert len(set(mse.round(8))) > 1  # per image, not one number repeated
    assert all(math.isfinite(e["psnr_db"]) and math.isfinite(e["recon_bits_per_dim"]) for e in result["images"])
    assert result["mean"]["mse"] == pytest.approx(mse.mean(), rel=1e-6)


def test_reconstruct_errors_match_the_model(cvae):
    from facevae.analysis.reconstruct import reconstruct
    from facevae.training.rundir import open_run

    run = open_run(cvae)
    result = reconstruct(run, n=3)
    x, y, _ = run.test_batch(3)
    recon = run.model.reconstruct(x, run.condition_of(y))
    expected = ((recon - x) ** 2).flatten(1).mean(1).numpy()
    assert [e["mse"] for e in result["images"]] == pytest.approx(expected.tolist(), rel=1e-5)


# --- sample --------------------------------------------------------------------------------------------------
def test_sample_conditional_with_settings(cvae, capsys):
    assert main(["sample", str(cvae), "--n", "12", "--set", "Smiling=1", "--set", "Eyeglasses=0",
                 "--temperature", "0.8"]) == 0
    out = capsys.readouterr().out
    stem = cvae / "analysis" / "sample_Smiling1_Eyeglasses0"
    for path in (stem.with_suffix(".png"), Path(f"{stem}_compare.png"), stem.with_suffix(".json")):
        assert str(path) in out
    assert_png(stem.with_suffix(".png"), min_width=800, min_height=300)
    assert_png(f"{stem}_compare.png", min_width=800, min_height=250)
    result = json.loads(stem.with_suffix(".json").read_text())
    names = result["condition_names"]
    conditions = np.array(result["conditions"])
    assert conditions.shape == (12, len(names))
    assert np.all(conditions[:, names.index("Smiling")] == 1)
    assert np.all(conditions[:, names.index("Eyeglasses")] == 0)
    assert result["temperature"] == 0.8 and len(result["condition_rows"]) == 12


def test_sample_condition_changes_images_for_the_same_z(cvae):
    from facevae.analysis.sample import sample_images
    from facevae.training.rundir import open_run

    run = open_run(cvae)
    off = sample_images(run, 6, {"Smiling": 0}, temperature=1.0, seed=3)
    on = sample_images(run, 6, {"Smiling": 1}, temperature=1.0, seed=3)
    assert torch.equal(off["z"], on["z"])
    column = run.condition_names.index("Smiling")
    assert torch.all(off["conditions"][:, column] == 0) and torch.all(on["conditions"][:, column] == 1)
    assert (off["images"] - on["images"]).abs().max() > 1e-4
    again = sample_images(run, 6, {"Smiling": 1}, temperature=1.0, seed=3)
    assert torch.equal(again["images"], on["images"])  # deterministic with a seed


def test_sample_unconditional(vae, capsys):
    assert main(["sample", str(vae), "--n", "8", "--temperature", "0.5", "--seed", "1"]) == 0
    result = json.loads((vae / "analysis" / "sample.json").read_text())
    assert result["conditions"] is None and result["settings"] == {} and result["compare_png"] is None
    assert_png(vae / "analysis" / "sample.png", min_width=800, min_height=150)


# --- traverse ------------------------------------------------------------------------------------------------
def test_traverse_one_sheet_per_requested_dim(vae, capsys):
    assert main(["traverse", str(vae), "--dims", "1,3,6", "--faces", "3", "--range", "-2", "2", "--steps", "5"]) == 0
    out = capsys.readouterr().out
    result = json.loads((vae / "analysis" / "traverse.json").read_text())
    assert [e["dim"] for e in result["dims"]] == [1, 3, 6]
    assert result["values"] == pytest.approx([-2, -1, 0, 1, 2])
    assert len(result["faces"]) == 3
    for entry in result["dims"]:
        assert str(entry["png"]) in out
        w, h = assert_png(entry["png"], min_width=600, min_height=350)  # 5 columns, 3 rows of 128 px
        assert w > h
    assert sorted(result["overview"]["order"]) == list(range(8))  # the overview covers every dimension
    kls = [d["kl"] for d in result["overview"]["dims"]]
    assert kls == sorted(kls, reverse=True)
    assert_png(result["overview"]["png"], min_width=600, min_height=8 * 128)
    sheets = sorted(p.name for p in (vae / "analysis" / "traverse").glob("*.png"))
    assert sheets == ["dim_001.png", "dim_003.png", "dim_006.png"]


def test_negative_numbers_in_scientific_notation_are_values_not_flags():
    from facevae.cli import build_parser

    args = build_parser().parse_args(["traverse", "run", "--range", "-1e-3", "-.5", "--steps", "3"])
    assert args.value_range == [-1e-3, -0.5]


def test_an_unknown_flag_is_named_under_its_commands_usage(capsys):
    from facevae.cli import main

    for argv, prog in ((["traverse", "run", "--bogus", "1"], "facevae traverse"),
                       (["data", "info", "d", "--bogus"], "facevae data info")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and f"{prog}: error: unrecognized arguments: --bogus" in err
        assert err.startswith(f"usage: {prog} ")  # the command's flags, not `facevae COMMAND ...`


@pytest.mark.parametrize("argv, flag", [
    (["reconstruct", "RUN", "--n", "0"], "--n must be at least 1"),
    (["sample", "RUN", "--n", "0"], "--n must be at least 1"),
    (["traverse", "RUN", "--steps", "1"], "--steps must be at least 2"),
    (["traverse", "RUN", "--steps", "65"], "--steps must be at most 64"),
    (["traverse", "RUN", "--faces", "0"], "--faces must be at least 1"),
    (["edit", "RUN", "--index", "0", "--set", "Smiling=1", "--steps", "1"], "--steps must be at least 2"),
    (["probe", "RUN", "--max-train", "1"], "--max-train must be at least 2"),
    (["data", "synth", "OUT", "--n", "0"], "--n must be at least 1"),
])
def test_a_count_out_of_range_is_named_by_its_flag(cvae, tmp_path, capsys, argv, flag):
    from facevae.cli import main

    argv = [str(cvae) if a == "RUN" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"facevae: error: {flag}") and "got" in err, err


def test_traverse_all_means_active_dims(cvae):
    from facevae.analysis.traverse import traverse
    from facevae.training.rundir import open_run

    result = traverse(open_run(cvae), "all", faces=2, steps=3)
    table = result["overview"]["dims"]
    active = [d["dim"] for d in table if d["active"]] or [d["dim"] for d in table]
    assert [e["dim"] for e in result["dims"]] == active  # in KL order
    assert result["all_inactive"] == (not any(d["active"] for d in table))
    assert all(d["label"] == f"dim {d['dim']}" for d in table) and result["names_from"] is None


def test_traverse_labels_come_from_dims_json(fresh_cvae):
    from facevae.analysis.traverse import traverse
    from facevae.training.rundir import open_run

    entries = [{"dim": d, "kl": float(8 - d), "active": d < 6, "name": None, "score": None} for d in range(8)]
    entries[2].update(name="rotation", score=0.71, runner_up={"name": "face_width", "score": 0.12})
    entries[5].update(name="hair_color", score=0.4)
    (fresh_cvae / "analysis").mkdir(exist_ok=True)
    (fresh_cvae / "analysis" / "dims.json").write_text(json.dumps({"dims": entries}))
    result = traverse(open_run(fresh_cvae), "all", faces=2, steps=3)
    labels = {e["dim"]: e["label"] for e in result["dims"]}
    assert labels[2] == "dim 2 · rotation (0.71)"
    assert labels[5] == "dim 5 · hair_color (0.40)"
    assert labels[0] == "dim 0"
    assert sorted(labels) == [0, 1, 2, 3, 4, 5]  # 'active' from dims.json
    assert result["overview"]["order"] == list(range(8))  # 'kl' from dims.json: 8, 7, ..., 1
    saved = json.loads((fresh_cvae / "analysis" / "traverse.json").read_text())
    assert "dim 2 · rotation (0.71)" in [e["label"] for e in saved["dims"]]
    assert saved["names_from"].endswith("dims.json")


def test_parse_dims():
    from facevae.analysis.traverse import parse_dims

    assert parse_dims("all", 8) is None
    assert parse_dims("2, 5,2", 8) == [2, 5]
    assert parse_dims("0-3", 8) == [0, 1, 2, 3]
    for bad in ("8", "-1", "x", "3-9"):
        with pytest.raises(ValueError):
            parse_dims(bad, 8)


# --- edit ----------------------------------------------------------------------------------------------------
def test_edit_through_condition_keeps_z(cvae, capsys):
    from facevae.training.rundir import open_run

    run = open_run(cvae)
    index = position_with(run, "Smiling", 0)
    assert main(["edit", str(cvae), "--index", str(index), "--set", "Smiling=1"]) == 0
    out = capsys.readouterr().out
    stem = cvae / "analysis" / f"edit_test{index}_Smiling1"
    assert str(stem.with_suffix(".png")) in out
    assert_png(stem.with_suffix(".png"), min_width=700, min_height=250)
    result = json.loads(stem.with_suffix(".json").read_text())
    assert result["changes"] == [{"attribute": "Smiling", "before": 0, "after": 1, "method": "condition"}]
    assert result["z_before"] == result["z_after"] and result["latent_shift_norm"] == 0
    assert result["image_change_mse"] > 0
    column = result["condition_names"].index("Smiling")
    assert result["condition_before"][column] == 0 and result["condition_after"][column] == 1
    changed = [i for i, (a, b) in enumerate(zip(result["condition_before"], result["condition_after"])) if a != b]
    assert changed == [column]


def test_edit_unconditional_moves_along_a_latent_direction(vae, capsys):
    from facevae.analysis.edit import Directions
    from facevae.training.rundir import open_run

    run = open_run(vae)
    index = position_with(run, "Smiling", 0)
    assert main(["edit", str(vae), "--index", str(index), "--set", "Smiling=1", "--steps", "4"]) == 0
    result = json.loads((vae / "analysis" / f"edit_test{index}_Smiling1.json").read_text())
    (change,) = result["changes"]
    assert change["method"] == "latent direction" and change["before"] == 0
    assert change["direction_norm"] > 0 and result["latent_shift_norm"] > 0
    assert result["strengths"] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    # the face's projection on the direction lands on the positive class mean's projection
    found = Directions(run)("Smiling")
    u = found["direction"] / np.linalg.norm(found["direction"])
    assert np.dot(result["z_after"], u) == pytest.approx(np.dot(found["mean_pos"], u), abs=1e-4)
    assert np.dot(result["z_before"], u) == pytest.approx(change["projection_before"], abs=1e-4)
    assert_png(result["png"], min_width=600, min_height=250)


def test_latent_edit_sets_every_projection():
    from facevae.analysis.edit import latent_edit

    rng = np.random.default_rng(0)
    found = []
    for _ in range(2):
        neg, pos = rng.normal(size=6), rng.normal(size=6)
        found.append({"direction": pos - neg, "mean_pos": pos, "mean_neg": neg, "counts": [5, 5], "split": "test"})
    z = rng.normal(size=6).astype(np.float32)
    delta, info = latent_edit(z, found, [1, 0])
    for f, target, i in zip(found, [f["mean_pos"] for f in found[:1]] + [found[1]["mean_neg"]], info):
        u = f["direction"] / np.linalg.norm(f["direction"])
        assert np.dot(z + delta, u) == pytest.approx(np.dot(target, u), abs=1e-4)
        assert i["direction_norm"] == pytest.approx(np.linalg.norm(f["direction"]))
    # one attribute, a face at the negative class mean: the move is exactly the difference of means
    f = found[0]
    delta, _ = latent_edit(f["mean_neg"].astype(np.float32), [f], [1])
    assert delta == pytest.approx(f["direction"], abs=1e-5)


def test_edit_image_file_is_prepared_like_the_dataset(cvae, tmp_path, capsys):
    from facevae.analysis.edit import load_image
    from facevae.training.rundir import open_run

    run = open_run(cvae)
    x, _, rows = run.test_batch(1)
    picture = tmp_path / "face.png"
    Image.fromarray(np.asarray(run.data.packed.images[rows[0]])).save(picture)
    loaded, framing = load_image(run, picture, align=False)  # the face detector would re-frame it
    assert loaded.shape == x.shape and framing["face_found"] is False
    assert (loaded - x).abs().max() < 2 / 255  # same crop and resize as the packed image went through
    assert main(["edit", str(cvae), "--image", str(picture), "--set", "Bangs=1", "--given", "Male=0"]) == 0
    result = json.loads((cvae / "analysis" / "edit_face_Bangs1.json").read_text())
    assert result["source"]["image"] == str(picture) and result["source"]["given"] == {"Male": 0}
    assert isinstance(result["source"]["face_found"], bool) and result["source"]["alignment"]
    assert result["changes"][0]["before"] is None  # unknown for a picture
    assert result["condition_before"][result["condition_names"].index("Male")] == 0
    assert_png(result["png"], min_width=600, min_height=250)


# --- bad input: one line, exit status 2 ------------------------------------------------------------------------
def test_unknown_attribute_is_one_line(cvae, vae, capsys):
    err = one_line_error(capsys, ["sample", str(cvae), "--set", "Smilling=1"])
    assert "Smilling" in err and "available" in err
    err = one_line_error(capsys, ["edit", str(vae), "--index", "0", "--set", "Nose_Ring=1"])
    assert "Nose_Ring" in err
    one_line_error(capsys, ["sample", str(cvae), "--set", "Smiling=2"])
    one_line_error(capsys, ["sample", str(vae), "--set", "Smiling=1"])  # an unconditional model takes no settings


def test_dimension_out_of_range_is_one_line(vae, capsys):
    err = one_line_error(capsys, ["traverse", str(vae), "--dims", "2,8"])
    assert "8" in err and "0 to 7" in err
    one_line_error(capsys, ["traverse", str(vae), "--dims", "two"])


def test_text_file_as_image_is_one_line(cvae, tmp_path, capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture\n")
    err = one_line_error(capsys, ["edit", str(cvae), "--image", str(text), "--set", "Smiling=1"])
    assert "notes.jpg" in err and "not an image" in err
    one_line_error(capsys, ["edit", str(cvae), "--image", str(tmp_path / "missing.png"), "--set", "Smiling=1"])
    one_line_error(capsys, ["edit", str(cvae), "--index", "100000", "--set", "Smiling=1"])


def test_run_without_finished_model_is_one_line(cvae_run, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(cvae_run / "config.yaml", unfinished / "config.yaml")
    for command in (["reconstruct"], ["sample"], ["traverse"], ["edit", "--index", "0", "--set", "Smiling=1"]):
        err = one_line_error(capsys, [command[0], str(unfinished), *command[1:]])
        assert "model.safetensors" in err
    err = one_line_error(capsys, ["reconstruct", str(tmp_path / "nowhere")])
    assert "not a run directory" in err


@pytest.mark.parametrize("command", ["reconstruct", "sample", "traverse", "edit"])
def test_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"example:\n  facevae {command} " in capsys.readouterr().out


# --- hostile numbers and groups ----------------------------------------------------------------------------------
HUGE = str(10**10)  # more images than any machine's memory holds, were they decoded at once


@pytest.mark.parametrize("command, text", [
    (["sample", "--temperature", "inf"], "temperature must be a finite number"),  # was: a sheet of NaN images
    (["sample", "--seed", "-1"], "--seed must be between 0 and"),  # a conditional model's rows need numpy's seed
    (["sample", "--seed", str(2**64)], "--seed must be between 0 and"),
    (["sample", "--n", str(10**9)], "n must be at most"),
    (["traverse", "--dims", "0", "--steps", HUGE], "steps must be at most"),
    (["edit", "--index", "0", "--set", "Smiling=1", "--steps", HUGE], "steps must be at most"),
], ids=["temperature-inf", "seed-negative", "seed-2**64", "n-huge", "traverse-steps-huge", "edit-steps-huge"])
def test_a_hostile_number_is_one_line_naming_it(cvae, capsys, command, text):
    assert text in one_line_error(capsys, [command[0], str(cvae), *command[1:]])


WRITTEN = {"dims": "analysis/dims.json", "traverse": "analysis/traverse.json", "metrics": "metrics.json",
           "probe": "analysis/probe.json"}


@pytest.mark.parametrize("command", [["dims"], ["traverse", "--dims", "0", "--faces", "1"],
                                     ["metrics", "--metrics", "mig", "--n", "30", "--n-eval", "12"], ["probe"]],
                         ids=lambda c: c[0])
def test_group_all_that_the_group_error_offers_works(vae, capsys, command):
    assert main([command[0], str(vae), *command[1:], "--group", "all"]) == 0
    result = json.loads((vae / WRITTEN[command[0]]).read_text())
    group = result["disentanglement"]["settings"]["group"] if command[0] == "metrics" else result["group"]
    assert group == "z"  # a flat model's 'all' is its one group, written where the default's files go


def test_group_all_of_a_hierarchical_model_is_every_unit():
    from types import SimpleNamespace

    from facevae.analysis.shared import group_stem
    from facevae.models.latents import flat_groups
    from facevae.training.rundir import Run

    groups = flat_groups({"4x4.0": (2, 4, 4), "8x8.0": (2, 8, 8)})
    run = SimpleNamespace(model=SimpleNamespace(latent_groups=groups, latent_dim=160))
    run.group = lambda name=None: Run.group(run, name)
    whole = run.group("all")
    assert (whole.name, whole.size, whole.offset) == ("all", 160, 0)
    assert run.group(None) == groups[0] and group_stem(run, "dims", "all") == "dims_all"
