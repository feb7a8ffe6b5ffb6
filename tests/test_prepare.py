import errno
import faulthandler
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import celeba_image, write_celeba_files
from facevae.common.errors import DatasetError
from facevae.common.lock import LOCK_NAME, LockedError, hold
from facevae.data import prepare as prepare_module
from facevae.data.packed import PackedDataset
from facevae.data.prepare import PrepareOptions, decode_face, prepare_celeba

BIG = 400  # images in the CelebA folder of the command-line tests
BIG_CHUNK = 8


@pytest.fixture(scope="module")
def big_celeba(tmp_path_factory):
    """A CelebA folder of 400 images and its uninterrupted preparation, shared by the slow tests."""
    root = tmp_path_factory.mktemp("big")
    src = write_celeba_files(root / "celeba", BIG)
    fresh, _ = prepare_celeba(src, root / "fresh", PrepareOptions(workers=1, chunk=BIG_CHUNK), progress=False)
    return src, fresh


def prepare_command(src, out, workers=1):
    return [sys.executable, "-m", "facevae", "data", "prepare", str(src), str(out), "--workers", str(workers),
            "--chunk", str(BIG_CHUNK)]


def wait_for_chunks(out, count, proc):
    """Block until the preparation at ``out`` has finished ``count`` chunks (or its process ended)."""
    progress = out / ".partial" / "progress.json"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            if len(json.loads(progress.read_text())["done"]) >= count:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"the preparation did not reach {count} chunks (exit code {proc.poll()})")


def same_dataset(a, b):
    return (np.array_equal(np.asarray(a.images), np.asarray(b.images)) and np.array_equal(a.attributes, b.attributes)
            and a.image_ids == b.image_ids)


@pytest.fixture
def hang_guard():
    """A test that would otherwise hang for ever (a pool waiting for a dead worker) fails instead."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def reference_face(i, size=64):
    """The standard preprocessing done the slow, obvious way: full decode, crop, resize."""
    from PIL import Image

    img = celeba_image(i).crop((15, 35, 163, 183))
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def test_prepare_matches_the_standard_crop_and_resize(celeba_dir, tmp_path):
    dataset, report = prepare_celeba(celeba_dir, tmp_path / "out", PrepareOptions(workers=1, chunk=16), progress=False)
    assert len(dataset) == 40 and dataset.images.shape == (40, 64, 64, 3)
    assert isinstance(dataset.images, np.memmap)
    assert dataset.image_ids[:2] == ["000001.jpg", "000002.jpg"]
    assert dataset.attribute_names[0] == "5_o_Clock_Shadow" and dataset.attributes.shape == (40, 40)
    assert report["count_matches"] and report["corrupt_images"]["count"] == 0 and report["written"] == 40
    assert report["partition_counts"] == {"train": 14, "valid": 13, "test": 13}
    # JPEG and reduced-scale decoding leave small differences, never a different picture.
    diffs = [np.abs(dataset.images[i].astype(np.float32) - reference_face(i)).mean() for i in range(40)]
    assert max(diffs) < 4.0, max(diffs)
    assert not (tmp_path / "out" / ".partial").exists()


def test_fast_decode_is_close_to_full_decode(celeba_dir):
    data = (celeba_dir / "img_align_celeba" / "000003.jpg").read_bytes()
    fast, full = decode_face(data, 64, fast=True), decode_face(data, 64, fast=False)
    assert fast.shape == full.shape == (64, 64, 3)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 3.0
    assert decode_face(data, 128).shape == (128, 128, 3)


def test_bad_jpegs_are_skipped_counted_and_listed(celeba_dir, tmp_path):
    folder = celeba_dir / "img_align_celeba"
    (folder / "000005.jpg").write_bytes(b"")
    data = (folder / "000007.jpg").read_bytes()
    (folder / "000007.jpg").write_bytes(data[: len(data) // 3])
    (folder / "000009.jpg").write_bytes(b"not a jpeg at all" * 10)
    (folder / "000011.jpg").unlink()
    from PIL import Image

    Image.new("RGB", (178, 218), (120, 120, 120)).save(folder / "000013.jpg")
    dataset, report = prepare_celeba(celeba_dir, tmp_path / "out", PrepareOptions(workers=2, chunk=8), progress=False)
    skipped = {e["name"] for e in report["corrupt_images"]["files"]}
    assert skipped == {"000005.jpg", "000007.jpg", "000009.jpg"}
    assert report["corrupt_images"]["count"] == 3
    assert report["missing_images"] == {"count": 1, "names": ["000011.jpg"]}
    assert not report["count_matches"]
    assert [e["name"] for e in report["quasi_constant_images"]["files"]] == ["000013.jpg"]
    assert report["written"] == len(dataset) == 36
    gone = {"000005.jpg", "000007.jpg", "000009.jpg", "000011.jpg"}
    assert gone.isdisjoint(dataset.image_ids)
    # The rest is intact: each kept row is its own image, attributes still aligned.
    from facevae.data.celeba_files import find_layout, read_annotations

    ann = read_annotations(find_layout(celeba_dir))
    for row, image_id in enumerate(dataset.image_ids):
        i = int(image_id[:6]) - 1
        assert (dataset.attributes[row] == ann.attributes[i]).all()
        if image_id != "000013.jpg":
            assert np.abs(dataset.images[row].astype(np.float32) - reference_face(i)).mean() < 4.0
    assert json.loads((dataset.root / "integrity.json").read_text())["corrupt_images"]["count"] == 3


def test_zip_and_folder_give_the_same_dataset(tmp_path):
    folder = write_celeba_files(tmp_path / "f", 20)
    zipped = write_celeba_files(tmp_path / "z", 20, zip_images=True)
    a, _ = prepare_celeba(folder, tmp_path / "a", PrepareOptions(workers=2, chunk=4), progress=False)
    b, report = prepare_celeba(zipped, tmp_path / "b", PrepareOptions(workers=2, chunk=4), progress=False)
    assert "zip" in report["source"]["images"]
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images))


def test_existing_output_needs_overwrite(celeba_dir, tmp_path):
    prepare_celeba(celeba_dir, tmp_path / "out", PrepareOptions(workers=1), progress=False)
    with pytest.raises(DatasetError, match="--overwrite"):
        prepare_celeba(celeba_dir, tmp_path / "out", PrepareOptions(workers=1), progress=False)
    prepare_celeba(celeba_dir, tmp_path / "out", PrepareOptions(workers=1), overwrite=True, progress=False)


def test_interrupted_preparation_continues_without_redoing_chunks(celeba_dir, tmp_path, monkeypatch):
    real = prepare_module._process_chunk
    calls = []

    def interrupted_after_three(task):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(task[0])
        return real(task)

    options = PrepareOptions(workers=1, chunk=5)
    monkeypatch.setattr(prepare_module, "_process_chunk", interrupted_after_three)
    with pytest.raises(DatasetError, match="run the same command again"):
        prepare_celeba(celeba_dir, tmp_path / "out", options, progress=False)
    assert not (tmp_path / "out" / "meta.json").exists()

    resumed = []
    monkeypatch.setattr(prepare_module, "_process_chunk", lambda task: resumed.append(task[0]) or real(task))
    dataset, _ = prepare_celeba(celeba_dir, tmp_path / "out", options, progress=False)
    assert sorted(resumed) == [15, 20, 25, 30, 35]  # only the chunks not finished before
    fresh, _ = prepare_celeba(celeba_dir, tmp_path / "fresh", options, progress=False)
    assert np.array_equal(np.asarray(dataset.images), np.asarray(fresh.images))


def test_finished_chunks_whose_images_are_gone_are_done_again(celeba_dir, tmp_path, monkeypatch):
    real = prepare_module._process_chunk
    calls = []

    def interrupted_after_three(task):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(task[0])
        return real(task)

    options = PrepareOptions(workers=1, chunk=5)
    monkeypatch.setattr(prepare_module, "_process_chunk", interrupted_after_three)
    with pytest.raises(DatasetError):
        prepare_celeba(celeba_dir, tmp_path / "out", options, progress=False)
    (tmp_path / "out" / ".partial" / "images.npy").unlink()  # as after a crash while finishing

    redone = []
    monkeypatch.setattr(prepare_module, "_process_chunk", lambda task: redone.append(task[0]) or real(task))
    dataset, _ = prepare_celeba(celeba_dir, tmp_path / "out", options, progress=False)
    assert sorted(redone) == list(range(0, 40, 5))
    fresh, _ = prepare_celeba(celeba_dir, tmp_path / "fresh", options, progress=False)
    assert same_dataset(dataset, fresh)


def children_of(pid: int) -> set[int]:
    """Linux: the pids whose parent is ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkilled_preparation_resumes_to_the_same_result(big_celeba, tmp_path, workers):
    src, fresh = big_celeba
    out = tmp_path / "out"
    proc = subprocess.Popen(prepare_command(src, out, workers), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_chunks(out, 3, proc)
    workers_pids = children_of(proc.pid) if sys.platform.startswith("linux") else set()
    assert len(workers_pids) == (workers if workers > 1 and sys.platform.startswith("linux") else 0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = len(json.loads((out / ".partial" / "progress.json").read_text())["done"])
    assert 3 <= finished_before < BIG // BIG_CHUNK, "the run should have been killed part-way"
    # the workers go with it, instead of waiting for work for ever
    deadline = time.time() + 30
    while any(alive(pid) for pid in workers_pids) and time.time() < deadline:
        time.sleep(0.01)
    assert not any(alive(pid) for pid in workers_pids)

    rerun = subprocess.run(prepare_command(src, out, workers), check=True, capture_output=True, text=True)
    # the killed run's lock file was left behind, naming a dead process
    assert f"took over the lock of {out} from pid {proc.pid}" in rerun.stderr
    assert same_dataset(PackedDataset(out), fresh)
    assert not (out / LOCK_NAME).exists()


@pytest.mark.parametrize(
    "workers, signum, to_group",
    [(1, signal.SIGTERM, False), (2, signal.SIGTERM, False), (2, signal.SIGTERM, True), (2, signal.SIGINT, True)],
    ids=["sigterm-1-worker", "sigterm-2-workers", "sigterm-to-the-group", "ctrl-c-to-the-group"],
)
def test_sigterm_and_ctrl_c_stop_cleanly_and_the_rerun_finishes(big_celeba, tmp_path, workers, signum, to_group):
    src, fresh = big_celeba
    out = tmp_path / "out"
    # its own process group: a signal to the group reaches the workers too, as from a terminal or `timeout`
    proc = subprocess.Popen(prepare_command(src, out, workers), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    wait_for_chunks(out, 3, proc)
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    last_line = stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert last_line.startswith(f"facevae: {out}: interrupted; run the same command again to continue from ")
    assert not (out / "meta.json").exists() and not (out / LOCK_NAME).exists()
    done = json.loads((out / ".partial" / "progress.json").read_text())["done"]
    assert f"from {len(done)} finished chunks" in last_line and len(done) < BIG // BIG_CHUNK

    rerun = subprocess.run(prepare_command(src, out, workers), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert same_dataset(PackedDataset(out), fresh)


def test_too_little_free_space_is_refused_before_decoding(celeba_dir, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=123_456))
    decoded = []
    monkeypatch.setattr(prepare_module, "decode_face", lambda *args: decoded.append(args))
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as caught:
        prepare_celeba(celeba_dir, out, PrepareOptions(workers=1), progress=False)
    message = str(caught.value)
    needed = 40 * 64 * 64 * 3
    assert "\n" not in message and message.startswith(f"{out}: not enough free disk space")
    assert "123,456 bytes" in message and "free" in message
    assert int(message.split(": ")[-1].split(" bytes")[0].replace(",", "")) > needed  # the bytes needed
    assert decoded == [] and not (out / LOCK_NAME).exists()


def test_a_full_disk_while_writing_says_how_to_continue(celeba_dir, tmp_path, monkeypatch):
    real = prepare_module.write_json_atomic
    calls = []

    def full_after_three_chunks(path, obj):
        calls.append(path)
        if len(calls) > 4:  # the first save, then three chunks
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj)

    monkeypatch.setattr(prepare_module, "write_json_atomic", full_after_three_chunks)
    options = PrepareOptions(workers=1, chunk=5)
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as caught:
        prepare_celeba(celeba_dir, out, options, progress=False)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{out}: the disk is full (No space left on device")
    assert "free some space, then run the same command again to continue from 3 finished chunks" in message
    monkeypatch.setattr(prepare_module, "write_json_atomic", real)
    resumed, _ = prepare_celeba(celeba_dir, out, options, progress=False)
    fresh, _ = prepare_celeba(celeba_dir, tmp_path / "fresh", options, progress=False)
    assert same_dataset(resumed, fresh)


def test_a_dead_worker_is_a_one_line_error_and_the_rerun_continues(celeba_dir, tmp_path, monkeypatch, hang_guard):
    real = prepare_module.decode_face
    fatal = (celeba_dir / "img_align_celeba" / "000023.jpg").read_bytes()
    test_process = os.getpid()

    def dies_on_one_image(data, *args):
        if data == fatal and os.getpid() != test_process:
            os._exit(1)  # as if killed: no exception, no result
        return real(data, *args)

    monkeypatch.setattr(prepare_module, "decode_face", dies_on_one_image)  # the forked workers inherit it
    options = PrepareOptions(workers=2, chunk=5)
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as caught:
        prepare_celeba(celeba_dir, out, options, progress=False)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{out}: a decoder process died")
    done = json.loads((out / ".partial" / "progress.json").read_text())["done"]
    assert f"run the same command again to continue from {len(done)} finished chunks" in message
    assert 20 not in done and not (out / "meta.json").exists()

    monkeypatch.setattr(prepare_module, "decode_face", real)
    resumed, _ = prepare_celeba(celeba_dir, out, options, progress=False)
    fresh, _ = prepare_celeba(celeba_dir, tmp_path / "fresh", PrepareOptions(workers=1, chunk=5), progress=False)
    assert same_dataset(resumed, fresh)


def test_one_preparation_at_a_time(celeba_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with hold(out, what="preparing a dataset"):
        with pytest.raises(LockedError) as caught:
            prepare_celeba(celeba_dir, out, PrepareOptions(workers=1), progress=False)
    message = str(caught.value)
    assert "\n" not in message and f"{out}: in use by pid {os.getpid()}" in message and "preparing a dataset" in message
    assert not (out / ".partial").exists()  # refused before touching anything
    prepare_celeba(celeba_dir, out, PrepareOptions(workers=1), progress=False)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs, where this machine lets us mount one (root, mount allowed); skipped elsewhere."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs Linux and root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_preparing_onto_a_real_full_disk(small_disk, big_celeba, celeba_dir, monkeypatch):
    src, _ = big_celeba  # 400 images of 64x64: 4.9 MB, more than the disk holds
    run = subprocess.run(prepare_command(src, small_disk / "big", workers=2), capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith(f"facevae: error: {small_disk / 'big'}: not enough free disk space"), run.stderr
    assert len(run.stderr.strip().splitlines()) == 1

    # Past the free-space check (told of plenty), reserving the blocks fails cleanly: no SIGBUS later.
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=10**12))
    with pytest.raises(DatasetError, match="the disk is full"):
        prepare_celeba(src, small_disk / "told", PrepareOptions(workers=1), progress=False)
    monkeypatch.undo()

    small, _ = prepare_celeba(celeba_dir, small_disk / "small", PrepareOptions(workers=2), progress=False)
    assert len(small) == 40


@pytest.mark.parametrize("fast", [True, False])
def test_a_photo_is_turned_upright_by_its_exif_orientation(celeba_dir, fast):
    from PIL import Image

    upright = celeba_image(4)
    stored = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer turns it a quarter clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(stored, format="JPEG", quality=95, exif=exif)
    face = decode_face(stored.getvalue(), 64, fast=fast).astype(np.float32)
    assert np.abs(face - reference_face(4)).mean() < 4.0


def test_a_decompression_bomb_that_pillow_only_warns_about_is_refused(monkeypatch):
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (150, 100)).save(png, format="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 15,000 pixels: below twice the limit
    with pytest.raises(Image.DecompressionBombWarning, match="15000 pixels"):
        decode_face(png.getvalue(), 64)


@pytest.mark.parametrize("factors, info, message", [
    (np.zeros((40, 14), np.int64), "{}", "synthetic_factors.json: not a description of factors.npy (KeyError"),
    (None, None, "factors.npy: damaged, cannot be read"),
    (np.zeros(40, np.int64), None, "factors.npy: shape (40,) does not match the 14 factors"),
])
def test_damaged_ground_truth_beside_the_images_is_named_before_decoding(tmp_path, monkeypatch, factors, info,
                                                                          message):
    from facevae.data.fake_celeba import write_fake_celeba

    src = write_fake_celeba(tmp_path / "fake", 40)
    if factors is None:
        (src / "factors.npy").write_bytes(b"not an array")
    else:
        np.save(src / "factors.npy", factors)
    if info is not None:
        (src / "synthetic_factors.json").write_text(info)
    decoded = []
    monkeypatch.setattr(prepare_module, "decode_face", lambda *args: decoded.append(args))
    with pytest.raises(DatasetError) as caught:
        prepare_celeba(src, tmp_path / "out", PrepareOptions(workers=1), progress=False)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert decoded == []
