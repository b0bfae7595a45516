"""Griffe extension of the documentation build: the docstrings' Sphinx roles become checked cross-references.

The docstrings write references the Sphinx way, ``:class:`PlasticRNNCell``` or ``:func:`~plasticnet.fast.x```.
Each one that names a plasticnet object becomes a mkdocstrings cross-reference to that object's canonical path,
resolved from where the docstring stands as Python would resolve the name there; ``mkdocs build --strict`` then
fails on any that points nowhere. Names outside plasticnet (``torch.nn.RNN``) and private ones, which the site does not show, stay code.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc):`(~?)([\w.]+)`")
PACKAGE = "plasticnet"


def _canonical(pkg: griffe.Module, path: str) -> str | None:
    """The canonical path of the plasticnet object at ``path`` (which may go through re-exports), or None."""
    parts = path.split(".")
    if parts[0] != PACKAGE:
        return None
    try:
        obj = pkg if len(parts) == 1 else pkg[".".join(parts[1:])]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return path  # left for autorefs to report, if it is not rendered anywhere
    try:
        return obj.canonical_path
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return path


def _target(pkg: griffe.Module, where: griffe.Object, name: str) -> str | None:
    """Where ``name``, written in the docstring of ``where``, points: its canonical path, or None if not ours."""
    if name.startswith("."):  # relative to the package of the docstring's module
        package = where.module.parent if not where.module.is_init_module else where.module
        name = f"{package.path}{name}"
    if name.startswith(PACKAGE + ".") or name == PACKAGE:
        return _canonical(pkg, name)
    head, _, rest = name.partition(".")
    scope = where if where.is_module or where.is_class else where.parent
    while scope is not None:
        try:
            full = scope.resolve(head)
            break
        except griffe.NameResolutionError:
            scope = scope.parent
    else:
        return name  # unknown: autorefs reports it
    if not full.startswith(PACKAGE):
        return None
    return _canonical(pkg, f"{full}.{rest}" if rest else full)


def _objects(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        if pkg.name != PACKAGE:
            return
        for obj in _objects(pkg):
            if obj.docstring is None:
                continue

            def link(match: re.Match, obj=obj) -> str:
                short, name = match.groups()
                shown = name.rsplit(".", 1)[-1] if short else name
                target = _target(pkg, obj, name)
                private = target is not None and any(part.startswith("_") for part in target.split("."))
                return f"`{shown}`" if target is None or private else f"[`{shown}`][{target}]"

            obj.docstring.value = ROLE.sub(link, obj.docstring.value)
