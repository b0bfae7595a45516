"""The documentation site builds with ``mkdocs build --strict``, and a broken reference fails that build."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs", reason="mkdocs is not installed: `pip install -e '.[docs]'` (make test does)")
pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed: `pip install -e '.[docs]'` (make test does)")


def build(site: Path, config: Path = ROOT / "mkdocs.yml") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_site_builds_strict_with_generated_references(tmp_path):
    done = build(tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    site = tmp_path / "site"
    cli = (site / "cli" / "index.html").read_text()
    for command in ("plasticnet train pattern", "plasticnet eval omniglot", "plasticnet data download"):
        assert command in cli  # the reference is generated from the parsers
    assert "--hidden-size" in cli and "plasticnet-cli" not in cli
    assert "paper-1000bit" in (site / "tasks" / "index.html").read_text()
    api = (site / "api" / "layers" / "index.html").read_text()
    assert 'id="plasticnet.layers.PlasticRNNCell"' in api
    assert ":class:`" not in api  # the docstrings' Sphinx roles became links
    assert re.search(r'<a [^>]*href="#plasticnet\.rules\.Rule"', api)


def test_a_broken_reference_fails_the_strict_build(tmp_path):
    import yaml

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Broken\n\n::: plasticnet.rules\n\nSee [this][plasticnet.rules.NoSuchRule].\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config.update(docs_dir=str(docs), nav=["index.md"], hooks=[str(ROOT / "docs" / "hooks.py")])
    config.pop("exclude_docs")
    python = config["plugins"][1]["mkdocstrings"]["handlers"]["python"]  # paths there are the config file's
    python["paths"] = [str(ROOT / "src")]
    python["options"]["extensions"] = [str(ROOT / "docs" / "sphinx_roles.py") + ":SphinxRoles"]
    path = tmp_path / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config))
    done = build(tmp_path / "site", path)
    assert done.returncode != 0
    assert "plasticnet.rules.NoSuchRule" in done.stdout + done.stderr
