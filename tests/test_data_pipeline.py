"""End to end through the CLI: fake CelebA (folder and zip) → prepare → info → explore → split → show."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from facevae.cli import main
from facevae.data.packed import PackedDataset
from facevae.data.synthetic import SyntheticFaces


@pytest.mark.parametrize("zipped", [False, True])
def test_fake_celeba_to_split(tmp_path, capsys, zipped):
    src, out = tmp_path / "celeba", tmp_path / "packed"
    assert main(["data", "fake-celeba", str(src), "--n", "300", "--seed", "3"] + (["--zip"] if zipped else [])) == 0
    assert (src / ("img_align_celeba.zip" if zipped else "img_align_celeba")).exists()
    assert main(["data", "prepare", str(src), str(out), "--workers", "2", "--chunk", "64"]) == 0
    dataset = PackedDataset(out)
    assert len(dataset) == 300 and dataset.attributes.shape == (300, 40)
    assert dataset.integrity["count_matches"] and dataset.integrity["corrupt_images"]["count"] == 0
    # The standard crop of a fake CelebA image is the face a direct 64x64 render shows.
    direct = SyntheticFaces(size=64).render(dataset.factors[:50]).astype(np.float32)
    assert np.abs(np.asarray(dataset.images[:50], np.float32) - direct).mean() < 4.0

    capsys.readouterr()
    assert main(["data", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 300 and info["splits"]["official"]["train"] > info["splits"]["official"]["test"]

    assert main(["data", "explore", str(out), "--out", str(tmp_path / "explore")]) == 0
    summary = json.loads((tmp_path / "explore" / "summary.json").read_text())
    assert summary["count"] == 300
    assert (tmp_path / "explore" / "correlation_heatmap.png").stat().st_size > 10_000

    assert main(["data", "split", str(out), "--strategy", "stratified", "--seed", "1"]) == 0
    assignment = PackedDataset(out).load_split("stratified")
    assert sorted(np.bincount(assignment)) == [30, 30, 240]
    assert "stratified" in PackedDataset(out).split_names()

    assert main(["data", "show", str(out), "--out", str(tmp_path / "grid.png"), "--n", "8"]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 5_000


def test_bad_ratios_and_unknown_split_are_one_line_errors(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["data", "synth", str(out), "--n", "50"]) == 0
    capsys.readouterr()
    assert main(["data", "split", str(out), "--ratios", "0.8,0.3"]) == 2
    err = capsys.readouterr().err
    assert "--ratios" in err and err.count("\n") == 1
    assert main(["data", "info", str(tmp_path)]) == 2
    assert "not a packed dataset" in capsys.readouterr().err


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`facevae data info d | head -1`: the reader leaves early, and the shell shows no traceback."""
    out = tmp_path / "synth"
    assert main(["data", "synth", str(out), "--n", "50"]) == 0
    info = subprocess.Popen([sys.executable, "-m", "facevae", "data", "info", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    info.stdout.close()  # before the first line is written
    err = info.stderr.read().decode()
    assert info.wait() == 141 and err == ""


def test_every_command_has_help_with_an_example(capsys):
    commands = [["data", c] for c in ("synth", "fake-celeba", "prepare", "info", "show", "explore", "split")]
    for command in [[], ["data"], ["demo"], *commands]:
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        assert "example:\n  facevae " in capsys.readouterr().out, command


@pytest.mark.parametrize("damage, message", [
    ("partition", "partition.npy shape (10,) != (50,)"),
    ("attributes-pm1", "attributes.npy holds values other than 0 and 1"),
    ("attributes-objects", "attributes.npy: damaged, cannot be read"),
    ("images-float", "images.npy holds float32"),
    ("factors", "factors.npy shape (10, 14) != (50, F)"),
    ("image-ids", "image_ids.json is not a list of 50 image ids"),
])
def test_a_packed_dataset_damaged_by_another_tool_is_a_one_line_error(tmp_path, capsys, damage, message):
    out = tmp_path / "synth"
    assert main(["data", "synth", str(out), "--n", "50", "--size", "16"]) == 0
    if damage == "partition":
        np.save(out / "partition.npy", np.load(out / "partition.npy")[:10])
    elif damage == "attributes-pm1":  # CelebA's own coding
        np.save(out / "attributes.npy", np.load(out / "attributes.npy").astype(np.int8) * 2 - 1)
    elif damage == "attributes-objects":
        np.save(out / "attributes.npy", np.load(out / "attributes.npy").astype(object), allow_pickle=True)
    elif damage == "images-float":
        np.save(out / "images.npy", np.load(out / "images.npy").astype(np.float32))
    elif damage == "factors":
        np.save(out / "factors.npy", np.load(out / "factors.npy")[:10])
    else:
        (out / "image_ids.json").write_text('{"0": "a"}')
    capsys.readouterr()
    assert main(["data", "info", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
