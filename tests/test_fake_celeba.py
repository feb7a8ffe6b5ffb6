"""Fake CelebA: the distributed layout, file formats, zip, determinism, and the crop contract."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from facevae.data.attributes import CELEBA_ATTRIBUTES
from facevae.data.celeba_files import find_layout, read_annotations
from facevae.data.fake_celeba import format_attr_row, generate_identities, write_fake_celeba
from facevae.data.synthetic import SyntheticFaces, generate_celeba_like_partition

N = 40


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    return write_fake_celeba(tmp_path_factory.mktemp("fake") / "celeba", N, seed=1, progress=False)


def test_layout_and_images(fake_dir):
    folder = fake_dir / "img_align_celeba"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"{i:06d}.jpg" for i in range(1, N + 1)]
    with Image.open(folder / "000001.jpg") as img:
        assert img.format == "JPEG" and img.size == (178, 218) and img.mode == "RGB"
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt",
                 "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt", "factors.npy",
                 "synthetic_factors.json"):
        assert (fake_dir / name).is_file(), name
    assert not (fake_dir / "img_align_celeba.zip").exists()


def test_attribute_file_format(fake_dir):
    lines = (fake_dir / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == str(N)
    assert lines[1] == " ".join(CELEBA_ATTRIBUTES)
    assert len(lines) == N + 2
    factors = np.load(fake_dir / "factors.npy")
    expected = SyntheticFaces((218, 178), frame=148).all_celeba_attributes(factors)
    for i, line in enumerate(lines[2:]):
        parts = line.split()
        assert parts[0] == f"{i + 1:06d}.jpg"
        assert len(parts) == 41 and set(parts[1:]) <= {"-1", "1"}
        assert [p == "1" for p in parts[1:]] == expected[i].astype(bool).tolist()
        assert line == format_attr_row(parts[0], expected[i])
    assert format_attr_row("000001.jpg", np.array([0, 1, 1, 0])) == "000001.jpg -1  1  1 -1"


def test_partition_identity_bbox_landmarks(fake_dir):
    rows = [line.split() for line in (fake_dir / "list_eval_partition.txt").read_text().splitlines()]
    assert [r[0] for r in rows] == [f"{i:06d}.jpg" for i in range(1, N + 1)]
    part = np.array([int(r[1]) for r in rows])
    assert np.array_equal(part, generate_celeba_like_partition(N))
    assert set(part) <= {0, 1, 2} and (np.diff(part) >= 0).all()
    ident = [line.split() for line in (fake_dir / "identity_CelebA.txt").read_text().splitlines()]
    assert len(ident) == N and all(len(r) == 2 and int(r[1]) > 0 for r in ident)
    for name, columns in (("list_bbox_celeba.txt", "image_id x_1 y_1 width height"),
                          ("list_landmarks_align_celeba.txt", "lefteye_x lefteye_y righteye_x righteye_y "
                           "nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y")):
        lines = (fake_dir / name).read_text().splitlines()
        assert lines[0] == str(N) and lines[1] == columns and len(lines) == N + 2
        width = len(columns.split()) - (1 if name.startswith("list_bbox") else 0)
        assert all(len(line.split()) == width + 1 for line in lines[2:])
    info = json.loads((fake_dir / "synthetic_factors.json").read_text())
    faces = SyntheticFaces(64)
    assert info["factor_names"] == faces.factor_names and info["factor_sizes"] == faces.factor_sizes
    assert np.load(fake_dir / "factors.npy").shape == (N, faces.num_factors)


def test_identities_are_disjoint_across_partitions():
    part = generate_celeba_like_partition(2000)
    ident = generate_identities(part, 0)
    sets = [set(ident[part == p]) for p in (0, 1, 2)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert 60 < len(np.unique(ident)) < 140  # about 20 images each


def test_parsed_by_the_celeba_reader(fake_dir):
    layout = find_layout(fake_dir)
    ann = read_annotations(layout)
    factors = np.load(fake_dir / "factors.npy")
    assert ann.attribute_names == CELEBA_ATTRIBUTES and len(ann.image_ids) == N
    assert np.array_equal(ann.attributes, SyntheticFaces(64).all_celeba_attributes(factors))
    assert np.array_equal(ann.partition, generate_celeba_like_partition(N))
    assert ann.identity is not None and (ann.identity > 0).all()


def test_centre_crop_gives_the_64_render(fake_dir):
    factors = np.load(fake_dir / "factors.npy")[:8]
    direct = SyntheticFaces(64).render(factors).astype(float)
    for i in range(8):
        with Image.open(fake_dir / "img_align_celeba" / f"{i + 1:06d}.jpg") as img:
            face = img.convert("RGB").crop((15, 35, 163, 183)).resize((64, 64), Image.Resampling.LANCZOS)
        assert np.abs(np.asarray(face, float) - direct[i]).mean() < 6


def test_zip_matches_folder(tmp_path, fake_dir):
    out = write_fake_celeba(tmp_path / "zipped", N, seed=1, zip=True, progress=False)
    assert not (out / "img_align_celeba").exists()
    with zipfile.ZipFile(out / "img_align_celeba.zip") as zf:
        members = [m for m in zf.namelist() if not m.endswith("/")]
        assert members == [f"img_align_celeba/{i:06d}.jpg" for i in range(1, N + 1)]
        data = zf.read("img_align_celeba/000007.jpg")
        with zf.open("img_align_celeba/000003.jpg") as fh, Image.open(fh) as img:
            assert img.size == (178, 218)
    assert data == (fake_dir / "img_align_celeba" / "000007.jpg").read_bytes()
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt"):
        assert (out / name).read_text() == (fake_dir / name).read_text()
    assert find_layout(out).images.describe().startswith("zip")


def test_worker_processes_give_the_same_files(tmp_path):
    n = 150  # three work units
    one = write_fake_celeba(tmp_path / "one", n, seed=2, progress=False, workers=1)
    two = write_fake_celeba(tmp_path / "two", n, seed=2, progress=False, workers=2)
    for name in ("000001.jpg", "000100.jpg", "000150.jpg"):
        assert (one / "img_align_celeba" / name).read_bytes() == (two / "img_align_celeba" / name).read_bytes()
    other = write_fake_celeba(tmp_path / "other", 5, seed=3, progress=False)
    assert not np.array_equal(np.load(other / "factors.npy"), np.load(one / "factors.npy")[:5])


def test_rewrite_and_refuse_foreign_folder(tmp_path):
    out = write_fake_celeba(tmp_path / "again", 10, progress=False)
    out = write_fake_celeba(out, 12, zip=True, progress=False)  # replaces its own earlier images
    assert not (out / "img_align_celeba").exists() and (out / "img_align_celeba.zip").exists()
    foreign = tmp_path / "foreign"
    (foreign / "img_align_celeba").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        write_fake_celeba(foreign, 5, progress=False)


@pytest.mark.parametrize("earlier", [None, 30], ids=["first-write", "over-an-earlier-one"])
def test_a_write_killed_among_its_images_is_no_celeba_and_can_be_done_again(tmp_path, monkeypatch, earlier):
    import facevae.data.fake_celeba as fake
    from facevae.common.errors import DatasetError

    out = tmp_path / "celeba"
    if earlier:
        write_fake_celeba(out, earlier, seed=2, progress=False)
    run_images = fake._ImageJobs.run

    def killed(self, folder, on_result):  # as a SIGKILL: some images on disk, no cleanup
        self.factors = self.factors[:5]
        run_images(self, folder, on_result)
        raise KeyboardInterrupt

    monkeypatch.setattr(fake._ImageJobs, "run", killed)
    with pytest.raises(KeyboardInterrupt):
        write_fake_celeba(out, 20, seed=1, progress=False)
    assert len(list((out / "img_align_celeba").iterdir())) == 5
    with pytest.raises(DatasetError, match="list_attr_celeba"):  # data prepare finds no CelebA here
        find_layout(out)

    monkeypatch.setattr(fake._ImageJobs, "run", run_images)
    write_fake_celeba(out, 20, seed=1, progress=False)  # not refused as a folder this tool did not write
    fresh = write_fake_celeba(tmp_path / "fresh", 20, seed=1, progress=False)
    for name in ("list_attr_celeba.txt", "factors.npy", "synthetic_factors.json", "img_align_celeba/000020.jpg"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name
    assert len(list((out / "img_align_celeba").iterdir())) == 20
