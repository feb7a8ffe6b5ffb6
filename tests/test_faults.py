"""Faults and hostile input (issue 15): every case ends in one line that names the file or flag, never a traceback.

The cases are listed in docs/faults.md with the test that shows each. Runs are the smallest the built-in
synthetic faces allow; a real tmpfs (mounted here when the tests run as root) stands for a full or a
read-only disk, and a real PostgreSQL server for a sweep shared across machines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facevae
from facevae.cli import main
from facevae.common.errors import RunError
from facevae.common.lock import hold
from facevae.data.packed import write_packed
from facevae.data.prepare import decode_face, to_rgb
from facevae.data.synthetic import write_synthetic_packed
from facevae.training.checkpoints import safe_load

TINY = ["--model", "vae", "--width", "1", "--latent-dim", "8", "--image-size", "32", "--batch-size", "32",
        "--eval-k", "2", "--eval-batches", "1", "--no-progress"]
# Lightning's own chatter, which only --verbose shows.
CHATTER = ("💡 Tip", "limit_train_batches=1.0", "_pytree", "GPU available")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """240 synthetic faces at 32×32 (about 192 train: 6 batches of 32 an epoch)."""
    return write_synthetic_packed(tmp_path_factory.mktemp("faults") / "data", 240, size=32, seed=1,
                                  progress=False).root


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--data", str(data), "--run-dir", str(run), "--epochs", "1", *TINY]) == 0
    return run


def one_line_error(capsys, argv: list[str], *expected: str, code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("facevae: error:"), err
    for text in expected:
        assert text in err, err
    return err


def copy_run(finished: Path, where: Path) -> Path:
    return Path(shutil.copytree(finished, where, ignore=shutil.ignore_patterns(".facevae.lock")))


# --- damaged run directories ------------------------------------------------------------------------------
def _cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _cut_inside_train_section(path: Path) -> None:
    """A config.yaml cut at a line end: still valid YAML, so only its missing keys can tell (a cut at half the
    file lands in a different place as the run's paths grow, and YAML takes most cuts as valid)."""
    text = path.read_text()
    start = text.index("\ntrain:\n") + len("\ntrain:\n")
    path.write_text(text[: text.index("\n", start) + 1])


def _other_latent_size(path: Path) -> None:
    info = json.loads(path.read_text())
    info["model"]["latent_dim"] = 16
    path.write_text(json.dumps(info))


DAMAGES = {
    "truncated": _cut_in_half,
    "cut inside its train section": _cut_inside_train_section,
    "empty": lambda p: p.write_bytes(b""),
    "5000 bytes": lambda p: p.write_bytes(p.read_bytes()[:5000]),
    "a list": lambda p: p.write_text("- 1\n- 2\n" if p.suffix == ".yaml" else "[1, 2]"),
    "invalid YAML": lambda p: p.write_text("model: [\n"),
    "another latent size": _other_latent_size,
    "a string latent size": lambda p: p.write_text(p.read_text().replace("latent_dim: 8", "latent_dim: eight")),
}
COMMANDS = {
    "resume": lambda run: ["train", "--resume", str(run), "--no-progress"],
    "reconstruct": lambda run: ["reconstruct", str(run)],
    "report": lambda run: ["report", str(run)],
    "metrics": lambda run: ["metrics", str(run), "--n", "20", "--n-eval", "10", "--metrics", "mig"],
}
ALL = ("reconstruct", "report", "metrics", "load")
# (damaged file, damage, the commands that must refuse it, what the one line says)
DAMAGED_RUNS = [
    ("checkpoints/last.ckpt", "truncated", ("resume",), "last.ckpt: truncated or damaged"),
    ("checkpoints/last.ckpt", "empty", ("resume",), "last.ckpt: empty (0 bytes)"),
    ("checkpoints/best.ckpt", "truncated", ("resume",), "best.ckpt: truncated or damaged"),
    ("checkpoints/best.ckpt", "empty", ("resume",), "best.ckpt: empty (0 bytes)"),
    ("model.safetensors", "5000 bytes", ALL, "model.safetensors: damaged (5,000 bytes"),
    ("model.safetensors", "empty", ALL, "model.safetensors: empty (0 bytes)"),
    ("model.json", "truncated", ALL, "model.json: not valid JSON"),
    ("model.json", "a list", ALL, "model.json: holds a list, not an object"),
    ("model.json", "another latent size", ALL, "model.json: describes another model than the weights"),
    ("config.yaml", "cut inside its train section", ("resume", "reconstruct", "report", "metrics"),
     "config.yaml: its 'train' section lacks data, split, epochs, batch_size, eval_k (cut short?)"),
    ("config.yaml", "invalid YAML", ("resume", "reconstruct", "report", "metrics"), "config.yaml: not valid YAML"),
    ("config.yaml", "a list", ("resume", "reconstruct", "report", "metrics"), "config.yaml: holds a YAML list"),
    ("config.yaml", "a string latent size", ("resume", "reconstruct", "report", "metrics"),
     "config.yaml: model.latent_dim must be int, got 'eight'"),
    ("metrics.json", "truncated", ("resume", "report", "metrics"), "metrics.json: not valid JSON (cut short)"),
    ("metrics.json", "empty", ("resume", "report", "metrics"), "metrics.json: empty"),
]


@pytest.mark.parametrize("name, damage, commands, message", DAMAGED_RUNS,
                         ids=[f"{name}-{damage}" for name, damage, *_ in DAMAGED_RUNS])
def test_a_damaged_run_file_is_one_line_naming_it(finished, tmp_path, capsys, name, damage, commands, message):
    run = copy_run(finished, tmp_path / "run")
    DAMAGES[damage](run / name)
    for command in commands:
        if command == "load":
            with pytest.raises(RunError) as caught:
                facevae.load(run)
            assert message in str(caught.value) and "\n" not in str(caught.value)
        else:
            one_line_error(capsys, COMMANDS[command](run), str(run / name), message)


def test_the_fix_a_damaged_export_suggests_works(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    (run / "model.safetensors").write_bytes(b"")
    one_line_error(capsys, ["reconstruct", str(run)], f"re-export it from checkpoints/best.ckpt with "
                   f"`facevae train --resume {run}`")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert facevae.load(run).config.latent_dim == 8


def test_a_run_whose_data_was_moved_names_it_and_the_fix_works(data, finished, tmp_path, capsys):
    import yaml

    run, moved = copy_run(finished, tmp_path / "run"), Path(shutil.copytree(data, tmp_path / "data"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["data"] = str(tmp_path / "gone")  # what a run trained on data since moved records
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for command in (["reconstruct", str(run)], ["train", "--resume", str(run), "--epochs", "2"]):
        one_line_error(capsys, command, f"the data it was trained on, {tmp_path / 'gone'}, is not there",
                       f"set train.data in {run / 'config.yaml'}")
    config["train"]["data"] = str(moved)  # the fix the line gives
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["reconstruct", str(run)]) == 0


def test_a_key_no_setting_reads_in_a_runs_config_is_named_once(finished, tmp_path, capsys):
    import yaml

    run = copy_run(finished, tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["learning_rate"] = config["train"].pop("lr")  # a hand edit's typo
    config["notes"] = "mine"
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["reconstruct", str(run)]) == 0
    err = capsys.readouterr().err
    assert err.count("notes, train.learning_rate are not settings of this version of facevae") == 1, err
    assert str(run / "config.yaml") in err


@pytest.mark.parametrize("argv", [
    ["data", "synth", "FILE/out", "--n", "5"], ["data", "fake-celeba", "FILE/out", "--n", "5"],
    ["data", "explore", "DATA", "--out", "FILE/out"], ["data", "show", "DATA", "--out", "FILE/sub/grid.png"],
    ["train", "--data", "DATA", "--run-dir", "FILE/run", "--image-size", "32"], ["demo", "--out", "FILE"],
    ["sweep", "--data", "DATA", "--out", "FILE/sweep", "--param", "beta=1", "--image-size", "32"],
    ["report", "RUN", "--out", "FILE/pages/report.html"],
])
def test_a_file_where_a_folder_must_be_made_is_named(data, finished, tmp_path, capsys, argv):
    blocking = tmp_path / "notes.txt"
    blocking.write_text("the user's")
    given = {"DATA": str(data), "RUN": str(finished)}
    argv = [str(blocking) + a[4:] if a.startswith("FILE") else given.get(a, a) for a in argv]
    one_line_error(capsys, argv, str(blocking), "is a file, so no folder can be made there")
    assert blocking.read_text() == "the user's"


def test_a_folder_given_where_a_file_is_written_is_named(data, tmp_path, capsys):
    folder = tmp_path / "grids"
    (folder / "inside").mkdir(parents=True)
    one_line_error(capsys, ["data", "show", str(data), "--out", str(folder)], f"{folder}: is a folder",
                   f"give a file's name ({folder}/NAME)")
    assert [p.name for p in folder.iterdir()] == ["inside"]  # no temporary left behind


# --- bad arguments and data, refused before a run directory exists ---------------------------------------
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_an_accelerator_the_machine_lacks_is_refused_before_any_folder(data, tmp_path, capsys, command):
    out = tmp_path / "out"
    where = ["--run-dir", str(out)] if command == "train" else ["--out", str(out), "--param", "beta=1,2"]
    one_line_error(capsys, [command, "--data", str(data), *where, *TINY, "--accelerator", "gpu"],
                   "--accelerator gpu: this machine has none")
    assert not out.exists()


@pytest.mark.parametrize("storage, message", [
    ("garbage", "--storage 'garbage' is not a database URL"),
    ("nosuch://host/db", "SQLAlchemy knows no database called 'nosuch'"),
    ("postgresql://me:secret@127.0.0.1:1/db", "postgresql://me:***@127.0.0.1:1/db: cannot open the database"),
])
def test_a_storage_url_that_cannot_be_used_is_one_line(data, tmp_path, capsys, storage, message):
    err = one_line_error(capsys, ["sweep", "--data", str(data), "--out", str(tmp_path / "s"), "--param", "beta=1,2",
                                  *TINY, "--storage", storage], message)
    assert "secret" not in err


def test_legal_but_likely_wrong_settings_warn(data, tmp_path, capsys, monkeypatch):
    import facevae.training.run

    trained = []
    monkeypatch.setattr(facevae.training.run, "train", lambda config, **kw: trained.append(config) or {})
    assert main(["train", "--data", str(data), "--run-dir", str(tmp_path / "r"), *TINY,
                 "--image-size", "64", "--latent-dim", "100000"]) == 0
    err = capsys.readouterr().err
    assert "--latent-dim 100000 makes huge checkpoints" in err
    assert "--image-size 64 is larger than the images of" in err and "(32x32): they are upsampled" in err
    assert len(trained) == 1


@pytest.mark.skipif(Path("/proc/sys/vm/overcommit_memory").is_file()
                    and Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1",
                    reason="this kernel grants any allocation and kills the process once it is used")
def test_settings_too_large_for_the_memory_are_one_line(data, tmp_path, capsys):
    run = tmp_path / "huge"  # 15 trillion weights: 335 GiB asked for at once
    one_line_error(capsys, ["train", "--data", str(data), "--run-dir", str(run), *TINY, "--model", "hvae",
                            "--hvae-channels", "100000"], "out of memory (335.3 GiB at once)", "--batch-size")
    assert main(["train", "--data", str(data), "--run-dir", str(run), "--epochs", "1", *TINY]) == 0  # started again


def test_a_bernoulli_likelihood_on_grey_or_resized_images_warns(data, tmp_path, capsys, monkeypatch):
    import facevae.training.run
    from facevae.data.sprites import write_dsprites_packed

    monkeypatch.setattr(facevae.training.run, "train", lambda config, **kw: {})
    sprites = write_dsprites_packed(tmp_path / "sprites", 40, seed=0, progress=False).root
    runs = iter(range(10))

    def warnings_of(dataset, *flags: str) -> str:
        argv = ["train", "--data", str(dataset), "--run-dir", str(tmp_path / f"r{next(runs)}"), "--likelihood",
                "bernoulli", "--split", "official", *flags]
        assert main(argv) == 0
        return capsys.readouterr().err

    assert "grey values" in warnings_of(data, "--image-size", "32")  # the synthetic faces
    assert "resized from 64x64 to 32x32" in warnings_of(sprites, "--image-size", "32")
    assert "bernoulli" not in warnings_of(sprites, "--image-size", "64")  # dSprites as stored: exact


def test_a_truncated_split_file_is_an_error_naming_it(data, tmp_path, capsys):
    copy = Path(shutil.copytree(data, tmp_path / "data"))
    assert main(["data", "split", str(copy), "--strategy", "random", "--name", "cut"]) == 0
    split = copy / "splits" / "cut.npy"
    np.save(split, np.load(split)[:100])
    run = tmp_path / "run"
    one_line_error(capsys, ["train", "--data", str(copy), "--split", "cut", "--run-dir", str(run), *TINY],
                   f"{split}: holds 100 entries, the dataset has 240 images")


def test_an_empty_validation_part_is_named_before_training(tmp_path, capsys):
    four = write_synthetic_packed(tmp_path / "four", 4, size=32, seed=1, progress=False).root  # 3 train, 1 test
    one_line_error(capsys, ["train", "--data", str(four), "--run-dir", str(tmp_path / "run"), *TINY],
                   "split 'official' has no validation images")
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- pictures in every mode Pillow reads ------------------------------------------------------------------
def test_a_16_bit_grayscale_png_decodes_by_scaling(tmp_path):
    grey = np.full((64, 64), 32768, np.uint16)  # mid-grey on 16 bits
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode.startswith("I")
    face = decode_face(path.read_bytes(), 32)
    assert face.shape == (32, 32, 3) and abs(face.mean() - 128) < 1  # Pillow's own convert gives 255


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F"])
def test_every_pillow_mode_becomes_rgb_with_its_tones(mode):
    ramp = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    if mode in ("I", "I;16"):
        img = Image.fromarray((ramp * 65535).astype(np.uint16)).convert(mode) if mode == "I" else \
            Image.fromarray((ramp * 65535).astype(np.uint16))
    elif mode == "F":
        img = Image.fromarray(ramp.astype(np.float32))
    else:
        img = Image.fromarray((ramp * 255).astype(np.uint8)).convert(mode)
    rgb = np.asarray(to_rgb(img))
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    if mode not in ("1", "CMYK", "YCbCr", "P", "PA"):  # those are the formats' own mappings, not a ramp's
        assert abs(rgb.mean() - 127.5) < 4, (mode, rgb.mean())


def test_transparent_pixels_show_white_not_their_hidden_colour():
    rgba = np.zeros((8, 8, 4), np.uint8)  # black, fully transparent
    assert np.asarray(to_rgb(Image.fromarray(rgba, "RGBA"))).min() == 255


# --- files left by killed writes, and a second writer ---------------------------------------------------
def test_stale_checkpoint_temporaries_are_removed_when_a_run_starts(data, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs, as a killed writer's
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    stale = run / "checkpoints" / f".last.ckpt.{dead.pid}.tmp"
    stale.write_bytes(b"\0" * 1000)
    live = run / "checkpoints" / f".best.ckpt.{os.getppid()}.tmp"  # a running process: being written
    live.write_bytes(b"\0")
    assert main(["train", "--data", str(data), "--run-dir", str(run), "--epochs", "1", *TINY,
                 "--limit-train-batches", "1"]) == 0
    assert not stale.exists() and live.exists()
    assert f"removed {stale}, left by a write that was killed" in capsys.readouterr().err


def test_a_second_writer_of_a_run_is_refused(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    with hold(run, what="training"):
        one_line_error(capsys, ["train", "--resume", str(run), "--no-progress"], f"pid {os.getpid()}", "training")


# A facevae command that SIGKILLs itself at the rename onto a file named NAME, before or after it: a kill at an
# exact point of a write, where a timer would land anywhere.
_KILLED_AT_RENAME = """
import os, signal, sys
name, when = sys.argv[1:3]
rename = os.replace
def replace(src, dst, *args, **kwargs):
    hit = os.path.basename(dst) == name
    if hit and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    rename(src, dst, *args, **kwargs)
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from facevae.cli import main
sys.exit(main(sys.argv[3:]))
"""


def killed_at_rename(name: str, when: str, argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", _KILLED_AT_RENAME, name, when, *argv], capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


def ok(capsys, argv: list[str]) -> None:
    assert main(argv) == 0
    capsys.readouterr()  # its progress bar, before the one line a later command is to print


def same_files(folder: Path, other: Path) -> bool:
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    return names == sorted(p.name for p in other.iterdir() if p.is_file()) and all(
        (folder / n).read_bytes() == (other / n).read_bytes() for n in names)


@pytest.mark.parametrize("command", [["synth", "--size", "32"], ["dsprites"]], ids=["synth", "dsprites"])
def test_a_dataset_write_killed_while_its_files_move_in_is_refused_and_the_rerun_finishes(tmp_path, capsys, command):
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    ok(capsys, ["data", *command, str(out), "--n", "64", "--seed", "0"])
    # rewritten with another seed, killed with the new images in place beside the old attributes and factors
    killed_at_rename("images.npy", "after", ["data", *command, str(out), "--n", "64", "--seed", "1"])
    for argv in (["data", "info", str(out)], ["data", "show", str(out), "--out", str(tmp_path / "grid.png")]):
        one_line_error(capsys, argv, f"{out}: an unfinished dataset", "run the command that wrote it again")
    ok(capsys, ["data", *command, str(out), "--n", "64", "--seed", "1"])
    ok(capsys, ["data", *command, str(fresh), "--n", "64", "--seed", "1"])
    assert same_files(out, fresh)


def test_a_rewritten_dataset_keeps_no_split_of_the_one_it_replaced(tmp_path, capsys):
    out = tmp_path / "out"
    ok(capsys, ["data", "synth", str(out), "--n", "64", "--size", "32", "--seed", "0"])
    ok(capsys, ["data", "split", str(out), "--strategy", "stratified"])
    ok(capsys, ["data", "synth", str(out), "--n", "64", "--size", "32", "--seed", "1"])  # other faces, as many
    one_line_error(capsys, ["data", "show", str(out), "--split", "stratified", "--out", str(tmp_path / "grid.png")],
                   "no split named 'stratified'")
    assert not (out / "splits").exists()


def test_a_second_writer_of_a_dataset_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with hold(out, what="writing synthetic faces"):
        one_line_error(capsys, ["data", "synth", str(out), "--n", "8", "--size", "32"], f"pid {os.getpid()}")
    assert not (out / ".partial").exists()


def test_files_of_a_datasets_names_that_no_dataset_wrote_are_never_written_over(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "images.npy").write_text("my own array")
    one_line_error(capsys, ["data", "synth", str(out), "--n", "8", "--size", "32"], "images.npy", "empty folder")
    assert (out / "images.npy").read_text() == "my own array" and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["images.npy", "notes.txt"]


def test_a_split_killed_before_its_assignment_is_stored_is_refused_and_the_rerun_finishes(data, tmp_path, capsys):
    ours, fresh = shutil.copytree(data, tmp_path / "data"), shutil.copytree(data, tmp_path / "fresh")
    split = ["data", "split", str(ours), "--strategy", "random"]
    ok(capsys, [*split, "--seed", "0"])
    killed_at_rename("random.npy", "before", [*split, "--seed", "1"])  # the seed-1 report is written already
    one_line_error(capsys, ["data", "show", str(ours), "--split", "random", "--out", str(tmp_path / "grid.png")],
                   "random.npy: missing beside its report", f"facevae data split {ours} --name random")
    ok(capsys, [*split, "--seed", "1"])
    ok(capsys, ["data", "split", str(fresh), "--strategy", "random", "--seed", "1"])
    assert same_files(ours / "splits", fresh / "splits")


def test_an_explore_killed_part_way_leaves_no_summary_and_the_rerun_matches(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data, other = (write_packed(tmp_path / name, np.zeros((40, 8, 8, 3), np.uint8), rng.random((40, 3)) < 0.4,
                                ["a", "b", "c"]).root for name in ("data", "other"))  # few attributes: quick figures
    out, fresh = tmp_path / "explore", tmp_path / "fresh"
    ok(capsys, ["data", "explore", str(other), "--out", str(out)])
    killed_at_rename("summary.json", "before", ["data", "explore", str(data), "--out", str(out)])
    assert not (out / "summary.json").exists()  # the earlier one would describe another dataset's tables
    ok(capsys, ["data", "explore", str(data), "--out", str(out)])
    ok(capsys, ["data", "explore", str(data), "--out", str(fresh)])
    assert same_files(out, fresh)


# --- full and read-only disks (a real tmpfs) -----------------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) → a fresh tmpfs of that many KiB; read_only(path) makes it read-only. Skips where it cannot."""
    mounted = []

    def mount(kib: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    def read_only(point: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True, capture_output=True)

    mount.read_only = read_only
    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_full_disk_while_training_keeps_the_last_good_checkpoint(data, finished, tmpfs, capsys):
    checkpoint = (finished / "checkpoints" / "last.ckpt").stat().st_size
    disk = tmpfs(int(checkpoint * 1.5) // 1024 + 300)  # one last.ckpt fits, not its replacement beside it
    run = disk / "run"
    assert main(["train", "--data", str(data), "--run-dir", str(run), "--epochs", "2", *TINY,
                 "--checkpoint-every-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert "could not be written: the disk is full" in err and "the last good checkpoint is kept" in err, err
    assert f"facevae train --resume {run}" in err
    assert safe_load(run / "checkpoints" / "last.ckpt")["global_step"] == 2  # whole, and the one before the failure
    assert not list((run / "checkpoints").glob(".*.tmp"))


@pytest.mark.parametrize("command", ["reconstruct", "report", "metrics"])
def test_a_read_only_run_directory_is_one_line(finished, tmpfs, capsys, command):
    disk = tmpfs(64 * 1024)
    run = copy_run(finished, disk / "run")
    tmpfs.read_only(disk)
    one_line_error(capsys, COMMANDS[command](run), str(run), "the filesystem is read-only")


# --- signals ----------------------------------------------------------------------------------------------
def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"stopped early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _has_checkpoint(path: Path):
    def found() -> bool:
        try:
            return safe_load(path)["global_step"] >= 2
        except (OSError, ValueError):
            return False
    return found


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_stops_training_with_its_exit_code_and_how_to_resume(data, tmp_path, signum, code):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "facevae", "train", "--data", str(data), "--run-dir", str(run),
                             "--epochs", "20", "--checkpoint-every-steps", "2", *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(_has_checkpoint(run / "checkpoints" / "last.ckpt"), 120, proc)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err and f"continue with `facevae train --resume {run}`" in err.strip().splitlines()[-1]
    assert not any(text in out + err for text in CHATTER), out + err
    assert not (run / "model.safetensors").exists()  # stopped, not finished


def test_sigterm_stops_a_sweep_with_143_and_its_trial_queued_again(data, tmp_path):
    import optuna
    from optuna.trial import TrialState

    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "facevae", "sweep", "--data", str(data), "--out", str(out),
                             "--param", "beta=1,2", *TINY, "--epochs", "20", "--checkpoint-every-steps", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(_has_checkpoint(out / "trial-0000" / "checkpoints" / "last.ckpt"), 120, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "run the same command to continue" in err.strip().splitlines()[-1], err
    trials = optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'sweep.db'}").get_trials()
    stopped = next(t for t in trials if t.state == TrialState.FAIL)
    assert [t.params for t in trials if t.state == TrialState.WAITING] == [stopped.params]


# --- a sweep on a real PostgreSQL server ------------------------------------------------------------------------
def _postgres_binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on a free local port (Debian's postgresql package, which .ci/run installs)."""
    pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install 'facevae[postgres]'")
    binaries = _postgres_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server installed (Debian's postgresql package)")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="facevae-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without a 'postgres' user to run the server as")
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(folder / "db"), "-U", "facevae", "--auth=trust"],
                   check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(folder / "db"), "-o", options, "-l",
                    str(folder / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://facevae@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(folder / "db"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _worker_pids(parent: int) -> list[int]:
    """The sweep's spawned worker processes (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]


@pytest.mark.slow
def test_two_workers_on_postgresql_finish_the_study_when_one_is_killed(data, tmp_path, postgres_url):
    import optuna
    from optuna.trial import TrialState

    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "facevae", "sweep", "--data", str(data), "--out", str(out),
                             "--param", "beta=1,2", "--param", "width=1,2", "--trials", "3", "--workers", "2",
                             "--storage", postgres_url, "--heartbeat-interval", "1", "--grace-period", "2", *TINY,
                             "--epochs", "1", "--checkpoint-every-steps", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def running() -> list:
        try:
            study = optuna.load_study(study_name=out.name, storage=postgres_url)
        except KeyError:  # not created yet
            return []
        # a trial's params are stored one suggestion at a time: both present means it is training
        return [t for t in study.get_trials()
                if t.state == TrialState.RUNNING and "worker" in t.user_attrs and len(t.params) == 2]

    try:
        _wait_for(lambda: len(running()) == 2, 120, proc)  # both workers mid-trial
        os.kill(_worker_pids(proc.pid)[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "the other workers finished the study" in err, err
    trials = optuna.load_study(study_name=out.name, storage=postgres_url).get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("surplus")]
    killed = [t for t in trials if t.state == TrialState.FAIL]
    points = [tuple(sorted(t.params.items())) for t in done]
    assert len(done) == 3 and len(set(points)) == 3  # every point once
    assert len(killed) == 1 and tuple(sorted(killed[0].params.items())) in points  # its point was trained again
