"""The HTML report: one self-contained file with the config, metrics, figures and the dimension table."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest

from facevae.cli import main
from facevae.reporting import html as report_html
from facevae.reporting.html import Section, build_report, html_table, register_section


class Resources(HTMLParser):
    """Every src/href/srcset/url() the page refers to, plus the tags seen."""

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data", "action") and value is not None:
                self.refs.append((tag, name, value))


@pytest.fixture(scope="module")
def report(cvae_run, tmp_path_factory):
    """The report of a copy of the tiny CVAE run, analysis made on the fly."""
    run_dir = tmp_path_factory.mktemp("report") / "cvae"
    shutil.copytree(cvae_run, run_dir)
    logs: list[str] = []
    path = build_report(run_dir, log=logs.append)
    return run_dir, path, path.read_text(encoding="utf-8"), logs


def test_report_is_one_self_contained_html_file(report):
    run_dir, path, page, _ = report
    assert path == run_dir / "report.html"
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    parser = Resources()
    parser.feed(page)
    images = [v for tag, name, v in parser.refs if tag == "img"]
    assert len(images) >= 5  # curves, reconstructions, samples, dims heatmap, traversals
    assert all(v.startswith("data:image/png;base64,") for v in images)
    for tag, name, value in parser.refs:  # only embedded data and in-page anchors
        assert value.startswith(("data:", "#")), (tag, name, value[:80])
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "@import" not in page and not re.search(r"url\(\s*['\"]?(https?:)?//", page)
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags


def test_report_contains_config_metrics_and_dimension_table(report):
    run_dir, _, page, _ = report
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for section in ("summary", "config", "curves", "metrics", "reconstructions", "samples", "dims", "traversals",
                    "disentanglement", "probe"):
        assert f'id="{section}"' in page
    # config
    assert "latent_dim" in page and "condition_names" in page and "Wearing_Hat" in page
    # test metrics, as the table formats them
    assert "test_elbo" in page and "test_bits_per_dim" in page
    assert report_html.fmt(metrics["test"]["test_bits_per_dim"]) in page
    # the dimension table names the factors and lists the active dimensions
    dims = json.loads((run_dir / "analysis" / "dims.json").read_text())
    assert "tracks factor" in page and "margin" in page
    for d in dims["dims"]:
        if d["active"]:
            assert f"<td>z{d['dim']}</td>" in page
    assert "rotation" in page and "given by the condition" in page
    # the disentanglement metrics are read from metrics.json, not computed for the page
    assert "Not computed yet: run `facevae metrics RUN`" in page
    # the probe table: one row per attribute, with its accuracy as the table formats it
    probe = json.loads((run_dir / "analysis" / "probe.json").read_text())
    assert "Attribute probes" in page
    for row in probe["attributes"]:
        assert f"<td>{row['attribute']}" in page and report_html.fmt(row["accuracy"], 3) in page


def test_report_generates_missing_analysis(report):
    run_dir, _, _, logs = report
    for name in ("dims.json", "dims.png", "reconstruct.json", "sample.json", "traverse.json"):
        assert (run_dir / "analysis" / name).is_file(), name
    assert any("computing dims" in line for line in logs)


def test_report_reuses_analysis_and_survives_a_moved_run(report, tmp_path):
    run_dir, _, _, _ = report
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)  # the JSON files name paths under the old folder
    (moved / "report.html").unlink()
    logs: list[str] = []
    out = build_report(moved, out=tmp_path / "page.html", generate=False, log=logs.append)
    page = out.read_text()
    assert not logs  # nothing recomputed
    assert page.count("data:image/png;base64,") >= 5
    assert "No reconstructions" not in page and "No traversals" not in page


def test_report_without_generation_notes_what_is_missing(cvae_run, tmp_path):
    run_dir = tmp_path / "bare"
    shutil.copytree(cvae_run, run_dir)
    page = build_report(run_dir, generate=False, log=lambda s: None).read_text()
    assert not (run_dir / "analysis" / "dims.json").exists()
    assert "No dimension evaluation" in page and "--no-generate" in page
    assert "test_elbo" in page  # metrics and curves need no analysis


def test_a_runs_note_and_few_conditions_are_spelled_out_in_its_summary(cvae_run, tmp_path):
    import yaml

    run_dir = tmp_path / "noted"
    shutil.copytree(cvae_run, run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert len(config["model"]["condition_names"]) > 10  # the fixture's 17: counted, not listed
    summary = build_report(run_dir, sections=[report_html.summary_section], generate=False,
                           log=lambda s: None).read_text()
    assert "<th>note</th>" not in summary and "17 attributes</td>" in summary
    config["train"]["note"] = "β = 32 <because> it named most factors"
    config["model"]["condition_names"] = ["Smiling", "Eyeglasses"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    summary = build_report(run_dir, sections=[report_html.summary_section], generate=False,
                           log=lambda s: None).read_text()
    assert "<th>note</th><td>β = 32 &lt;because&gt; it named most factors</td>" in summary
    assert "2 attributes: Smiling, Eyeglasses" in summary


def test_sections_are_pluggable(cvae_run, tmp_path):
    run_dir = tmp_path / "plug"
    shutil.copytree(cvae_run, run_dir)

    def probes_section(ctx):
        return Section("probes", "Linear probes", html_table(["attribute", "accuracy"], [("Smiling", 0.91)]))

    def broken_section(ctx):
        raise RuntimeError("boom")

    saved = list(report_html.SECTIONS)
    try:
        register_section(probes_section, after="metrics_section")
        names = [b.__name__ for b in report_html.SECTIONS]
        assert names.index("probes_section") == names.index("metrics_section") + 1
        with pytest.raises(ValueError, match="no report section"):
            register_section(broken_section, before="nope_section")
        page = build_report(run_dir, sections=[report_html.config_section, probes_section, broken_section],
                            generate=False, log=lambda s: None).read_text()
    finally:
        report_html.SECTIONS[:] = saved
    assert 'id="probes"' in page and "Smiling" in page and "0.91" in page
    assert "could not be built" in page and "boom" in page  # a broken section is a note, not a crash
    assert page.index('id="config"') < page.index('id="probes"')


def test_report_cli(cvae_run, tmp_path, capsys):
    from facevae.cli import main

    run_dir = tmp_path / "cli"
    shutil.copytree(cvae_run, run_dir)
    out = tmp_path / "out" / "r.html"
    assert main(["report", str(run_dir), "--out", str(out), "--no-generate"]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "example:" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["a folder", "under a file"])
def test_an_out_that_cannot_be_the_page_is_one_line_before_any_analysis(cvae_run, tmp_path, capsys, where):
    run = Path(shutil.copytree(cvae_run, tmp_path / "run"))
    shutil.rmtree(run / "analysis", ignore_errors=True)
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    out = tmp_path if where == "a folder" else notes / "report.html"
    assert main(["report", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"facevae: error: --out {out}: ") and "\n" not in err, err
    assert not (run / "analysis").exists()  # refused before minutes of analysis, not after
    assert notes.read_text() == "keep me\n"


def test_sweep_report_of_a_sweep_whose_database_is_gone_is_one_line(tmp_path, capsys):
    from facevae.sweeps.study import SweepConfig

    sweep = tmp_path / "sweep"
    SweepConfig(out=str(sweep), storage=f"sqlite:///{sweep / 'sweep.db'}", study="sweep", space={"beta": [1, 2]},
                objectives=["val_elbo"], directions=["maximize"], trials=2).save()
    assert main(["sweep-report", str(sweep)]) == 2
    err = capsys.readouterr().err.strip()
    assert "sweep.db: the sweep's database is not there" in err and "\n" not in err, err
    assert not (sweep / "sweep.db").exists()  # not made empty in its place
    optuna.create_study(study_name="another", storage=f"sqlite:///{sweep / 'sweep.db'}")
    assert main(["sweep-report", str(sweep)]) == 2
    assert "holds no study 'sweep'" in capsys.readouterr().err
