import numpy as np
import pytest

from conftest import write_celeba_files
from facevae.cli import main
from facevae.data.attributes import CELEBA_ATTRIBUTES
from facevae.data.celeba_files import AnnotationError, find_layout, parse_attr_csv, parse_attr_txt, read_annotations

NAMES = " ".join(CELEBA_ATTRIBUTES)


def attr_file(tmp_path, rows, count=None, names=NAMES, newline="\n"):
    path = tmp_path / "list_attr_celeba.txt"
    count = len(rows) if count is None else count
    path.write_bytes(newline.join([str(count), names, *rows]).encode() + newline.encode())
    return path


def row(image_id, values=None):
    values = values if values is not None else [1, -1] * 20
    return image_id + " " + " ".join(f"{v:2d}" for v in values)


def test_parses_celeba_txt_exactly(tmp_path):
    path = attr_file(tmp_path, [row("000001.jpg"), row("000002.jpg", [-1] * 40)])
    ids, names, attrs = parse_attr_txt(path)
    assert ids == ["000001.jpg", "000002.jpg"]
    assert names == CELEBA_ATTRIBUTES
    assert attrs.dtype == np.uint8 and attrs.shape == (2, 40)
    assert attrs[0].tolist() == [1, 0] * 20 and attrs[1].sum() == 0


def test_windows_line_endings_and_blank_lines_parse(tmp_path):
    path = attr_file(tmp_path, [row("000001.jpg"), "", "  ", row("000002.jpg"), "", ""], count=2, newline="\r\n")
    ids, _, attrs = parse_attr_txt(path)
    assert ids == ["000001.jpg", "000002.jpg"] and attrs.shape == (2, 40)


@pytest.mark.parametrize(
    "rows, count, line, message",
    [
        ([row("000001.jpg"), row("000002.jpg", [1] * 39)], None, 4, "found 40 columns"),
        ([row("000001.jpg"), row("000002.jpg", [1] * 39 + [0])], None, 4, "value '0' for Young"),
        ([row("000001.jpg"), row("000002.jpg", [2] + [1] * 39)], None, 4, "value '2' for 5_o_Clock_Shadow"),
        ([row("000001.jpg"), row("000001.jpg")], None, 4, "duplicate image id '000001.jpg' (first on line 3)"),
        ([row("000001.jpg")], 5, 1, "declares 5 images but 1 rows follow"),
    ],
)
def test_malformed_attr_file_names_file_and_line(tmp_path, rows, count, line, message):
    path = attr_file(tmp_path, rows, count=count)
    with pytest.raises(AnnotationError) as info:
        parse_attr_txt(path)
    assert f"{path}:{line}:" in str(info.value)
    assert message in str(info.value)


def test_csv_variant_and_missing_value(tmp_path):
    path = tmp_path / "list_attr_celeba.csv"
    path.write_text("image_id,Smiling,Male\r\n000001.jpg,1,-1\r\n000002.jpg,-1,1\r\n")
    ids, names, attrs = parse_attr_csv(path)
    assert names == ["Smiling", "Male"] and attrs.tolist() == [[1, 0], [0, 1]]
    path.write_text("image_id,Smiling,Male\n000001.jpg,1,-1\n000002.jpg,,1\n")
    with pytest.raises(AnnotationError, match=r"list_attr_celeba.csv:3: has a missing value"):
        parse_attr_csv(path)


def test_unknown_id_in_partition_file_names_line(tmp_path):
    root = write_celeba_files(tmp_path / "c", 3)
    with open(root / "list_eval_partition.txt", "a") as f:
        f.write("999999.jpg 0\n")
    with pytest.raises(AnnotationError, match=r"list_eval_partition.txt:4: unknown image id '999999.jpg'"):
        read_annotations(find_layout(root))


def test_partition_value_outside_012(tmp_path):
    root = write_celeba_files(tmp_path / "c", 3)
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 7\n")
    with pytest.raises(AnnotationError, match=r"list_eval_partition.txt:2: partition 7"):
        read_annotations(find_layout(root))


@pytest.mark.parametrize("kind", ["folder", "zip", "csv", "subdirs", "torchvision", "zipfile-arg", "subdirs-zipfile-arg"])
def test_finds_every_layout(tmp_path, kind):
    if kind == "torchvision":
        root = write_celeba_files(tmp_path / "root" / "celeba", 4).parent
    else:
        root = write_celeba_files(tmp_path / "c", 4, zip_images=kind.endswith(("zip", "zipfile-arg")),
                                  csv=kind == "csv", subdirs=kind.startswith("subdirs"))
    src = root / "img_align_celeba.zip" if kind == "zipfile-arg" else root
    src = root / "Img" / "img_align_celeba.zip" if kind == "subdirs-zipfile-arg" else src
    layout = find_layout(src)
    ann = read_annotations(layout)
    assert ann.image_ids == [f"{i:06d}.jpg" for i in range(1, 5)]
    assert ann.partition.tolist() == [0, 0, 1, 2]
    assert layout.images.names() == set(ann.image_ids)
    assert layout.images.read("000002.jpg")[:2] == b"\xff\xd8"  # a JPEG's start marker


def test_missing_files_give_clear_errors(tmp_path):
    from facevae.common.errors import DatasetError

    with pytest.raises(DatasetError, match="no such file"):
        find_layout(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no list_attr_celeba.txt"):
        find_layout(tmp_path / "empty")


def test_cli_reports_malformed_file_in_one_line(tmp_path, capsys):
    root = write_celeba_files(tmp_path / "c", 3)
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    lines[3] = lines[3].rsplit(" ", 1)[0]  # drop the last value of the second image
    (root / "list_attr_celeba.txt").write_text("\n".join(lines))
    code = main(["data", "prepare", str(root), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "list_attr_celeba.txt:4:" in err


def rewrite_csv(root, attr_rows, partition_rows):
    (root / "list_attr_celeba.csv").write_text("".join(line + "\n" for line in attr_rows))
    (root / "list_eval_partition.csv").write_text("".join(line + "\n" for line in partition_rows))


@pytest.mark.parametrize("variant", ["quoted", "pandas-index", "id-last"])
def test_csv_variants_read_as_the_plain_csv(tmp_path, variant):
    root = write_celeba_files(tmp_path / "c", 4, csv=True)
    plain = read_annotations(find_layout(root))
    attr = [r.split(",") for r in (root / "list_attr_celeba.csv").read_text().splitlines()]
    part = [r.split(",") for r in (root / "list_eval_partition.csv").read_text().splitlines()]
    if variant == "quoted":  # csv.QUOTE_ALL, as spreadsheet programs and R write it
        quote = lambda rows: [",".join(f'"{v}"' for v in r) for r in rows]  # noqa: E731
        rewrite_csv(root, quote(attr), quote(part))
    elif variant == "pandas-index":  # DataFrame.to_csv() without index=False: an unnamed first column
        index = lambda rows: [",".join([str(k - 1) if k else "", *r]) for k, r in enumerate(rows)]  # noqa: E731
        rewrite_csv(root, index(attr), index(part))
    else:
        last = lambda rows: [",".join([*r[1:], r[0]]) for r in rows]  # noqa: E731
        rewrite_csv(root, last(attr), last(part))
    ann = read_annotations(find_layout(root))
    assert ann.image_ids == plain.image_ids and ann.attribute_names == plain.attribute_names
    assert np.array_equal(ann.attributes, plain.attributes) and ann.partition.tolist() == [0, 0, 1, 2]


@pytest.mark.parametrize("junk", ["__MACOSX/img_align_celeba/._000002.jpg", "img_align_celeba/._000002.jpg",
                                  "../000002.jpg", "/tmp/000002.jpg"])
def test_zip_members_that_are_not_images_of_the_dataset_are_left_out(tmp_path, junk):
    import zipfile

    root = write_celeba_files(tmp_path / "c", 3, zip_images=True)
    real = find_layout(root).images.read("000002.jpg")
    with zipfile.ZipFile(root / "img_align_celeba.zip", "a") as zf:
        zf.writestr(zipfile.ZipInfo(junk), b"\x00\x05\x16\x07 an AppleDouble header, or an impostor")
    images = find_layout(root).images
    assert images.names() == {"000001.jpg", "000002.jpg", "000003.jpg"}
    assert images.read("000002.jpg") == real


def test_appledouble_files_in_the_image_folder_are_not_images(tmp_path):
    root = write_celeba_files(tmp_path / "c", 3)
    (root / "img_align_celeba" / "._000001.jpg").write_bytes(b"\x00\x05\x16\x07")
    assert find_layout(root).images.names() == {"000001.jpg", "000002.jpg", "000003.jpg"}


@pytest.mark.parametrize("theirs", ["img_align_celeba", "list_attr_celeba.txt"])
def test_fake_celeba_never_overwrites_a_real_celeba(tmp_path, capsys, theirs):
    real = write_celeba_files(tmp_path / "c", 3)
    if theirs != "img_align_celeba":  # the annotations alone, the images kept elsewhere
        import shutil

        shutil.rmtree(real / "img_align_celeba")
    before = (real / "list_attr_celeba.txt").read_bytes()
    assert main(["data", "fake-celeba", str(real), "--n", "5"]) == 2
    err = capsys.readouterr().err
    assert f"already holds {theirs}" in err and err.count("\n") == 1
    assert (real / "list_attr_celeba.txt").read_bytes() == before
