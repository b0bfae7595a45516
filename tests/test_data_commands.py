"""The `plasticnet data` subcommands as the main CLI will call them: parse, then func(args) -> exit code."""
from argparse import ArgumentParser

import pytest
from PIL import Image

from plasticnet.data import check
from plasticnet.data.commands import register
from plasticnet.errors import ConfigError, DataError


@pytest.fixture
def parser() -> ArgumentParser:
    parser = ArgumentParser(prog="plasticnet")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_check_prints_one_summary_line_and_returns_zero(parser, tmp_path, capsys):
    (tmp_path / "train").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "train" / "7.png")
    (tmp_path / "trainLabels.csv").write_text("id,label\n7,ship\n")
    args = parser.parse_args(["data", "check", "cifar10", str(tmp_path)])
    assert args.func(args) == 0
    assert capsys.readouterr().out == "cifar10: usable (Kaggle PNGs: 1 labelled train images)\n"


def test_check_raises_data_error_for_the_main_cli_to_turn_into_exit_2(parser, tmp_path):
    args = parser.parse_args(["data", "check", "omniglot", str(tmp_path)])
    with pytest.raises(DataError, match="holds no Omniglot zip"):
        args.func(args)


@pytest.mark.parametrize(
    "argv",
    [["data"], ["data", "check", "mnist", "x"], ["data", "download", "ptb"], ["data", "check", "ptb"]],
    ids=["no-action", "unknown-set", "no-root", "no-folder"],
)
def test_incomplete_command_lines_are_usage_errors(parser, argv, capsys):
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(argv)
    assert caught.value.code == 2


def test_library_check_rejects_unknown_names(tmp_path):
    with pytest.raises(ConfigError, match="unknown data set 'mnist'"):
        check("mnist", tmp_path)
