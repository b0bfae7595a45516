"""MkDocs hooks of the documentation site (mkdocs.yml names this file).

Two references are written at build time from what the code holds, so that each is described in one place only:

- ``<!-- plasticnet-cli -->`` becomes the ``--help`` text of every command and sub-command, from the argparse
  parsers of ``plasticnet.cli``;
- ``<!-- plasticnet-presets -->`` becomes one table per task of its presets and their settings, from
  ``plasticnet/configs/TASK.json``.
"""

from __future__ import annotations

import argparse
import os

CLI_MARKER = "<!-- plasticnet-cli -->"
PRESETS_MARKER = "<!-- plasticnet-presets -->"
WIDTH = "100"  # argparse wraps help text to $COLUMNS


def _sections(parser: argparse.ArgumentParser, depth: int = 2):
    yield f"{'#' * depth} `{parser.prog}`\n\n```text\n{parser.format_help().rstrip()}\n```\n"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser once
                yield from _sections(child, min(depth + 1, 4))


def cli_reference() -> str:
    from plasticnet.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        return "\n".join(_sections(build_parser()))
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def presets_reference() -> str:
    from plasticnet.config import load_presets
    from plasticnet.tasks import TASKS

    parts = []
    for task in TASKS.values():
        rows = "\n".join(f"| `{name}` | {', '.join(f'`{k}={v}`' for k, v in values.items())} |"
                         for name, values in load_presets(task.name).items())
        parts.append(f"### `{task.name}`\n\n{task.help[0].upper() + task.help[1:]}.\n\n"
                     f"| preset | settings |\n| --- | --- |\n{rows}\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if PRESETS_MARKER in markdown:
        markdown = markdown.replace(PRESETS_MARKER, presets_reference())
    return markdown
