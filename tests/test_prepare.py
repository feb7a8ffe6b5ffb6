import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import celeba_image, write_celeba_files
from facevae.common.errors import DatasetError
from facevae.data import prepare as prepare_module
from facevae.data.packed import PackedDataset
from facevae.data.prepare import PrepareOptions, decode_face, prepare_celeba


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


def test_sigkilled_preparation_resumes_to_the_same_result(tmp_path):
    src = write_celeba_files(tmp_path / "c", 400)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "facevae", "data", "prepare", str(src), str(out), "--workers", "1", "--chunk", "8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = out / ".partial" / "progress.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if len(json.loads(progress.read_text())["done"]) >= 3:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = len(json.loads(progress.read_text())["done"])
    assert 3 <= finished_before < 50, "the run should have been killed part-way"
    subprocess.run(cmd, check=True, capture_output=True)
    resumed = PackedDataset(out)
    fresh, _ = prepare_celeba(src, tmp_path / "fresh", PrepareOptions(workers=1, chunk=8), progress=False)
    assert len(resumed) == 400
    assert np.array_equal(np.asarray(resumed.images), np.asarray(fresh.images))
