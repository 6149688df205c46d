"""Reproducing a run: every command line parses back through the CLI's own parser into the same
TrainConfig, a weights file gives back the settings it was trained with (the shipped ones: their
documented recipes), a command from a file retrains the same weights bit for bit, and page
addresses carry settings with one-line refusals."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from owndata import make_zip

import ebm_play
from ebm_play import cli
from ebm_play.data import load_dataset
from ebm_play.errors import EBMError
from ebm_play.reproduce import RunSettings, query_string, settings_from_file, settings_from_query, train_command
from ebm_play.training import PRESETS, TrainConfig, preset

ROOT = Path(__file__).resolve().parent.parent


def parse(command: str):
    words = shlex.split(command)
    assert words[:4] == ["python", "-m", "ebm_play", "train"]
    return cli.build_parser().parse_args(words[3:])


CONFIGS = [
    TrainConfig(),
    TrainConfig(model="jem"),
    preset("fast"),
    preset("fast", model="jem", width=8, lr=0.0025, classes=[3, 8], spectral_norm=True, grad_clip=None),
    TrainConfig(model="rbm", hidden=64, persistent=False, cd_k=3, lr=1e-05),
    TrainConfig(drift_bound=None, grad_clamp=None, mirrored=0.25, augment=0.5, seed=7, fresh_steps=100),
    TrainConfig(model="mlp2d", hidden=64, step_size=0.002, noise=0.0632455532033676, energy_bound=5.0),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.model)
def test_command_parses_back_into_the_same_config(config):
    for chosen in (None, *PRESETS):
        args = parse(train_command(config, "my data.zip", 250, "out dir/m.safetensors", preset=chosen,
                                   labels_from_folders=True, held_out=0.2))
        assert cli.config_from_args(args) == config
        assert (args.data, args.labels_from_folders, args.held_out, args.steps, args.out) == (
            "my data.zip", True, 0.2, 250, "out dir/m.safetensors")


def test_commands_are_short():
    assert train_command(TrainConfig()) == "python -m ebm_play train --model cnn --steps 1000 --out my.safetensors"
    assert train_command(preset("fast", lr=0.002), "glyphs") == (
        "python -m ebm_play train --model cnn --preset fast --data glyphs --lr 0.002 --steps 1000 --out my.safetensors")


def test_a_dataset_brings_its_flags(tmp_path):
    d = load_dataset(make_zip(tmp_path / "g.zip"), labels_from_folders=True, held_out=0.25)
    args = parse(train_command(TrainConfig(model="jem"), d))
    assert args.data == str(tmp_path / "g.zip") and args.labels_from_folders and args.held_out == 0.25
    assert "--data" not in train_command(TrainConfig(), None)  # MNIST from the default root


def _documented_commands() -> dict[str, str]:
    """The shipped models' recipes as weights/README.md gives them (continuation lines joined)."""
    text = (ROOT / "weights" / "README.md").read_text().replace("\\\n", " ")
    found = {}
    for line in text.splitlines():
        m = re.search(r"python -m ebm_play train .*--out weights/(\S+)\.safetensors", line)
        if m:
            found[m.group(1)] = m.group(0)
    return found


def test_shipped_files_give_back_their_documented_recipes():
    documented = _documented_commands()
    assert set(documented) >= {"mnist", "mnist-jem", "mnist-rbm", "mnist-dsm"}
    for name, command in documented.items():
        settings = settings_from_file(ebm_play.weights.resolve(name))
        args = parse(command)
        assert settings.config == cli.config_from_args(args), name
        assert settings.steps == args.steps and settings.data == args.data in ("../shared/data", "mnist")
        assert cli.config_from_args(parse(settings.command())) == settings.config


def test_a_file_retrains_bit_for_bit_from_its_command(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_zip(tmp_path / "g.zip")
    rc = cli.main(["train", "--model", "jem", "--data", "g.zip", "--labels-from-folders", "--width", "4",
                   "--batch-size", "8", "--sampler-steps", "2", "--buffer-size", "32", "--lr", "0.003",
                   "--steps", "3", "--out", "a.safetensors", "--threads", "1"])
    assert rc == 0
    settings = settings_from_file("a.safetensors")
    assert settings.data == "g.zip" and settings.labels_from_folders and settings.steps == 3
    command = settings.command("b.safetensors")
    assert cli.main(shlex.split(command)[3:] + ["--threads", "1"]) == 0
    a, b = ebm_play.load_model("a.safetensors"), ebm_play.load_model("b.safetensors")
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert a.info["command"] == settings.command("my.safetensors")  # the file records its own command


def test_page_address_settings_round_trip():
    s = settings_from_query("?preset=fast&lr=0.002&data=glyphs&steps=2000&spectral-norm=on&classes=1,2")
    assert s.config == preset("fast", lr=0.002, spectral_norm=True, classes=[1, 2])
    assert (s.data, s.steps, s.preset) == ("glyphs", 2000, "fast")
    back = settings_from_query(s.query())
    assert back.config == s.config and (back.data, back.steps) == (s.data, s.steps)
    other = RunSettings(TrainConfig(model="jem", grad_clip=None), 10, None, True, 0.3)
    assert settings_from_query(query_string(other)) == RunSettings(other.config, 10, None, True, 0.3, None)
    assert settings_from_query({"lr": ["0.01"]}).config.lr == 0.01  # a parsed mapping, as a web framework gives


@pytest.mark.parametrize("query, words", [
    ("?lr=fast", "expected a finite number"), ("?lr=nan", "finite"), ("?lr=-1", "lr must be a positive"),
    ("?colour=red", "unknown setting 'colour'"), ("?preset=slow", "unknown preset"),
    ("?data=/etc/passwd", "must be one of"), ("?data=../weights", "must be one of"),
    ("?steps=0", "steps must be between"), ("?steps=1e9", "whole number"), ("?spectral_norm=maybe", "true or false"),
    ("?classes=1,x", "whole numbers separated by commas"), ("?model=gan", "unknown model kind"),
    ("?held_out=0.9", "held_out must be"), ("?" + "a=1&" * 2000, "over 4000 characters"),
])
def test_page_address_mistakes_are_one_line(query, words):
    with pytest.raises(EBMError) as e:
        settings_from_query(query)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_file_without_training_settings():
    with pytest.raises(EBMError, match="no training settings"):
        settings_from_file(ebm_play.weights.resolve("mnist-ood"))
