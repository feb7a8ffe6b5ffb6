"""Each setting is declared once, as a dataclass field: the flags, the sweep parameters and the checks follow it."""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from facevae.cli import build_parser, main
from facevae.common.settings import add_arguments, check_settings, setting, type_hints, values_from_args
from facevae.models.config import MODEL_NAMES, ModelConfig
from facevae.recognition.config import ClassifierConfig
from facevae.training.config import TrainConfig, resolve_precision

# Not 1:1 with a field: --conditions makes condition_names, --resume continues a run.
TRAIN_EXTRA = {"--conditions", "--preset", "--resume", "-h", "--help"}


@dataclass
class Dummy:
    count: int = setting(3, "how many", at_least=1)
    rate: float = setting(0.5, "a rate", above=0)
    mode: str = setting("a", "a mode", choices=("a", "b"))
    loud: bool = setting(False, "be loud")
    chatty: bool = setting(True, "no chatter")
    limit: float | None = setting(None, "an optional limit")
    tags: list[str] = setting([], "some tags")

    def __post_init__(self):
        check_settings(self)


def expected_flag(f: dataclasses.Field) -> str:
    if f.metadata.get("flag"):
        return f.metadata["flag"]
    kebab = f.name.replace("_", "-")
    return f"--no-{kebab}" if f.default is True else f"--{kebab}"


def subcommand(*path: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    parser.format_help()  # a subcommand may add its flags when first used
    return parser


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def test_a_dataclass_becomes_typed_flags_with_help_and_defaults():
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(parser, Dummy, group="dummy")
    assert flags_of(parser) == {"-h", "--help", "--count", "--rate", "--mode", "--loud", "--no-chatty", "--limit",
                                "--tags"}
    assert Dummy(**values_from_args(parser.parse_args([]), Dummy)) == Dummy()
    args = parser.parse_args(["--count", "4", "--rate", "1e-3", "--mode", "b", "--loud", "--no-chatty",
                              "--limit", "2", "--tags", "x,y"])
    assert Dummy(**values_from_args(args, Dummy)) == Dummy(4, 1e-3, "b", True, False, 2.0, ["x", "y"])
    assert parser.parse_args(["--limit", "none"]).limit is None
    help_text = parser.format_help()
    assert "how many (default: 3)" in help_text and "{a,b}" in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["--count", "many"])  # not an int: argparse's own error
    with pytest.raises(ValueError, match="--mode must be one of a, b; got 'c'"):
        Dummy(**values_from_args(parser.parse_args(["--mode", "c"]), Dummy))
    with pytest.raises(ValueError, match="--rate must be a finite number"):
        Dummy(rate=float("nan"))
    with pytest.raises(TypeError, match="Dummy.count must be int"):
        Dummy(count="3")


def test_a_new_field_appears_on_train_sweep_and_in_config_yaml(monkeypatch, synth_data, tmp_path):
    from facevae.cli.train import run_config_from_args
    from facevae.sweeps.search_space import parse_param

    @dataclass
    class WithDropout(TrainConfig):
        dropout: float = setting(0.1, "dropout probability", at_least=0)

    monkeypatch.setattr("facevae.training.config.TrainConfig", WithDropout)
    train = subcommand("train")
    assert "--dropout" in flags_of(train) and "dropout probability" in train.format_help()
    args = build_parser().parse_args(["train", "--data", str(synth_data), "--run-dir", str(tmp_path / "r"),
                                      "--model", "vae", "--dropout", "0.25"])
    assert run_config_from_args(args).to_dict()["train"]["dropout"] == 0.25
    assert "--dropout" in flags_of(subcommand("sweep"))
    assert parse_param("dropout=0,0.5") == ("dropout", [0.0, 0.5])


def test_train_flags_are_exactly_the_fields_with_their_types_and_defaults():
    train = subcommand("train")
    fields = [f for f in dataclasses.fields(ModelConfig) if f.name != "condition_names"]
    fields += list(dataclasses.fields(TrainConfig))
    assert flags_of(train) == {expected_flag(f) for f in fields} | TRAIN_EXTRA
    actions = {a.dest: a for a in train._actions}
    hints = type_hints(ModelConfig) | type_hints(TrainConfig)
    for f in fields:
        action, hint = actions[f.name], hints[f.name]
        if hint is bool:
            assert action.nargs == 0 and action.default == f.default, f.name
        elif hint in (int, float, str):
            assert action.type is hint and action.default == f.default or f.name == "model", f.name
        elif hint == list[int]:
            assert action.type(action.default) == f.default_factory(), f.name
        else:  # X | None
            assert action.default is None and action.type("none") is None, f.name
    assert actions["model"].default == "cvae" and actions["model"].metavar == "{" + ",".join(MODEL_NAMES) + "}"


def test_classify_train_flags_are_exactly_the_fields():
    classify = subcommand("classify", "train")
    expected = {expected_flag(f) for f in dataclasses.fields(ClassifierConfig)}
    assert flags_of(classify) == expected | {"--resume", "-h", "--help"}
    assert "--no-eval" in expected and "--no-progress" in expected


def test_model_names_are_the_registry_and_the_choices():
    from facevae.models import MODELS

    assert tuple(MODELS) == MODEL_NAMES
    assert dataclasses.fields(ModelConfig)[0].metadata["choices"] == MODEL_NAMES


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _swept(f: dataclasses.Field):
    """How a default stands in a sweep's space: a list as its items joined by '+'."""
    return "+".join(map(str, _default(f))) if isinstance(_default(f), list) else _default(f)


def _param_text(f: dataclasses.Field) -> str:
    if isinstance(_default(f), list):
        return "+".join(map(str, _default(f)))
    if f.default is None:
        return "none"
    if isinstance(f.default, bool):
        return str(f.default).lower()
    return str(f.default)


def test_every_setting_is_reachable_from_sweep_param(synth_data, tmp_path):
    from facevae.cli.sweep import sweep_config_from_args
    from facevae.sweeps.search_space import NOT_SWEPT, parse_param

    # data is the sweep's own (--data), run_dir each trial's, condition_names what conditions= resolves, note every
    # trial's (--note).
    assert NOT_SWEPT == {"data", "run_dir", "condition_names", "note"}
    assert {"--data", "--note"} <= flags_of(subcommand("sweep"))
    base = ["sweep", "--data", str(synth_data), "--out", str(tmp_path / "s"), "--model", "vae"]
    for f in [*dataclasses.fields(ModelConfig), *dataclasses.fields(TrainConfig)]:
        if f.name in NOT_SWEPT:
            continue
        text = _param_text(f)
        for spelling in (f.name, f.name.replace("_", "-")):
            assert parse_param(f"{spelling}={text}") == (f.name, [_swept(f)]), spelling
        config = sweep_config_from_args(build_parser().parse_args([*base, "--param", f"{f.name}={text}"]))
        assert config.space == {f.name: [_swept(f)]} and config.base["train"]["data"] == str(synth_data)
    config = sweep_config_from_args(build_parser().parse_args(
        [*base, "--param", "model=vae,cvae", "--param", "conditions=report,Male+Smiling"]))
    from facevae.sweeps.search_space import trial_config

    trial = trial_config(config.base, {"model": "cvae", "conditions": "Male+Smiling"}, config.conditions, "t")
    assert trial.model.condition_names == ["Male", "Smiling"] and trial.train.run_dir == "t"
    assert parse_param("hvae-groups=2+1,4+2+1") == ("hvae_groups", ["2+1", "4+2+1"])  # a list's points
    trial = trial_config(config.base, {"model": "hvae", "hvae_groups": "4+2+1", "image_size": 32}, "all", "t")
    assert trial.model.hvae_groups == [4, 2, 1]


BAD_TRAIN_ARGUMENTS = [
    (["--epochs", "-1"], "--epochs must be >= 1"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--patience", "-1"], "--patience must be >= 0"),
    (["--gradient-clip", "-1"], "--gradient-clip must be >= 0"),
    (["--eval-k", "0"], "--eval-k must be >= 1"),
    (["--eval-batches", "-1"], "--eval-batches must be >= 0"),
    (["--checkpoint-every-steps", "-1"], "--checkpoint-every-steps must be >= 0"),
    (["--limit-train-batches", "-1"], "--limit-train-batches must be a fraction in (0, 1]"),
    (["--limit-train-batches", "0"], "--limit-train-batches must be a fraction in (0, 1]"),
    (["--limit-train-batches", "2.5"], "or a whole number of batches"),
    (["--limit-val-batches", "-1"], "--limit-val-batches must be a fraction"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--num-workers", "-1"], "--num-workers must be >= 0"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    (["--beta", "nan"], "--beta must be a finite number"),
    (["--beta", "inf"], "--beta must be a finite number"),
    (["--beta", "0"], "--beta must be > 0"),
    (["--free-bits", "nan"], "--free-bits must be a finite number"),
    (["--ema", "1.5"], "--ema is a decay in [0, 1)"),
    (["--max-time", "garbage"], "--max-time must be DD:HH:MM:SS"),
    (["--max-time", "00:00:00:-5"], "--max-time must be DD:HH:MM:SS"),
    (["--max-time", "00:00:00:00"], "more than zero in all"),
    (["--lr-schedule", "sometimes"], "--lr-schedule must be one of cosine, plateau, none"),
    (["--precision", "8-bit"], "--precision must be one of auto, 32-true"),
    (["--num-nodes", "0"], "--num-nodes must be >= 1"),
    (["--devices", "0,x"], "--devices must be auto, a count"),
    (["--devices", "two"], "--devices must be auto, a count"),
    (["--model", "gan"], "--model must be one of vae, cvae, betavae"),
    (["--image-size", "48"], "--image-size must be one of 32, 64, 128"),
    (["--latent-dim", "0"], "--latent-dim must be >= 1"),
    (["--model", "betavae"], "betavae needs beta > 1"),
    (["--conditions", "Smiling,Nope"], "unknown attribute(s): Nope"),
]


def one_line_error(capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("facevae: error:") and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("argv, message", BAD_TRAIN_ARGUMENTS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_a_bad_train_argument_is_a_one_line_error_before_any_run_directory(argv, message, synth_data, tmp_path,
                                                                           capsys):
    run = tmp_path / "run"
    one_line_error(capsys, ["train", "--data", str(synth_data), "--run-dir", str(run), *argv], message)
    assert not run.exists()


@pytest.mark.parametrize("command, argv, message", [
    (["sweep", "--param", "beta=1,2"], ["--epochs", "0"], "--epochs must be >= 1"),
    (["sweep", "--param", "lr=0.1,nan"], [], "'nan' is not a finite number"),
    (["sweep", "--param", "beta=1,2"], ["--grace-period", "-1"], "--grace-period is a number of seconds"),
    (["sweep", "--param", "beta=1,2"], ["--metric-n", str(10**9)], "--metric-n must be 1 to 100,000 points"),
    (["sweep", "--param", "beta=1,2"], ["--sampler-seed", "-1"], "--sampler-seed must be between 0 and"),
    (["sweep", "--param", "beta=1,2"], ["--direction2", "minimize"], "--direction2 is the direction of --objective2"),
    (["classify", "train"], ["--epochs", "0"], "--epochs must be >= 1"),
    (["classify", "train"], ["--lr", "nan"], "--lr must be a finite number"),
    (["classify", "train"], ["--backbone-lr", "0"], "--backbone-lr must be > 0, or -1"),
    (["classify", "train"], ["--max-time", "1:2"], "--max-time must be DD:HH:MM:SS"),
])
def test_sweep_and_classify_check_the_same_way(command, argv, message, synth_data, tmp_path, capsys):
    run = tmp_path / "run"
    where = ["--out", str(run)] if command[0] == "sweep" else ["--run-dir", str(run)]
    one_line_error(capsys, [*command, "--data", str(synth_data), *where, *argv], message)
    assert not run.exists()


def test_a_huge_latent_size_trains_but_warns(monkeypatch, synth_data, tmp_path, capsys):
    import facevae.training.run

    trained = []
    monkeypatch.setattr(facevae.training.run, "train", lambda config, **kw: trained.append(config) or {})
    assert main(["train", "--data", str(synth_data), "--run-dir", str(tmp_path / "r"), "--model", "vae",
                 "--latent-dim", "100000"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--latent-dim 100000 makes huge checkpoints" in err
    assert trained[0].model.latent_dim == 100000


def test_nothing_below_the_command_line_imports_it():
    src = Path(__file__).resolve().parents[1] / "src" / "facevae"
    for path in (src / "sweeps").rglob("*.py"):
        assert not re.search(r"facevae\.cli\b|from facevae import cli", path.read_text()), path
    for path in (src / "common").rglob("*.py"):
        assert not re.search(r"^\s*(from|import) facevae\.(?!common)", path.read_text(), re.M), path


@pytest.mark.parametrize("cuda, bf16_gpu, amx, accelerator, chosen", [
    (False, False, True, "auto", "bf16-mixed"),   # a CPU that multiplies bfloat16 itself (AMX tiles)
    (False, False, False, "auto", "32-true"),     # one that would only emulate it
    (False, False, True, "cpu", "bf16-mixed"),
    (True, True, False, "auto", "bf16-mixed"),    # a GPU with bfloat16 goes first under auto
    (True, False, True, "gpu", "32-true"),        # an old GPU: float32, whatever the CPU can do
    (True, True, False, "cpu", "32-true"),        # the CPU asked for, a GPU present
])
def test_auto_precision_is_bfloat16_only_where_the_hardware_computes_it(monkeypatch, cuda, bf16_gpu, amx,
                                                                        accelerator, chosen):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_gpu)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_precision("auto", accelerator) == chosen
    assert resolve_precision("16-mixed", accelerator) == "16-mixed"  # a precision asked for is kept
    assert TrainConfig().precision == ClassifierConfig().precision == "auto"
