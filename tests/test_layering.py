"""Dependencies point down the layers (docs/design.md, section 9; README, "Layout").

operators (``iga.core``) and data (``iga.isomers``) -> pipeline (``iga.distill``) ->
benchmark and the ``iga`` facade -> ``empirical`` and ``theory`` -> ``paper_figures``;
the command-line dispatcher (``iga.cli``) sits on top and loads subcommands by name.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("iga", "theory", "empirical", "paper_figures")

# Lower rank = lower layer. An import may only point to a strictly lower rank, or stay
# inside its own group; two groups of one rank must not import each other.
RANK = {
    "iga.core": 0,
    "iga.isomers": 0,
    "iga.distill": 1,
    "iga": 2,  # the facade iga/__init__.py: re-exports core, loads the trainer lazily
    "iga.bench": 2,
    "empirical": 3,
    "theory": 3,
    "paper_figures": 4,
    "iga.cli": 5,
    "iga.__main__": 6,
}


def group(module: str) -> str:
    """The layer a dotted module name belongs to (``iga.core.mask`` -> ``iga.core``)."""
    parts = module.split(".")
    if parts[0] == "iga" and len(parts) > 1:
        return f"iga.{parts[1]}"
    return parts[0]


def import_edges(root: pathlib.Path = ROOT) -> list[tuple[str, str, str]]:
    """(importing file, from group, to group) for every absolute import between groups."""
    edges = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root)
            module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    targets = [node.module]
                else:
                    continue
                for target in targets:
                    if target.split(".")[0] in PACKAGES and group(target) != group(module):
                        edges.append((str(rel), group(module), group(target)))
    return edges


def upward(edges: list[tuple[str, str, str]]) -> list[str]:
    """The edges that point up (or sideways within one rank), as readable lines."""
    bad = []
    for where, src, dst in edges:
        if src not in RANK or dst not in RANK:
            bad.append(f"{where}: {src} -> {dst} (a group with no rank: add it to RANK)")
        elif RANK[dst] >= RANK[src]:
            bad.append(f"{where}: {src} (rank {RANK[src]}) imports {dst} (rank {RANK[dst]})")
    return bad


def test_no_upward_import():
    edges = import_edges()
    assert edges, "found no imports between layers: the walk is broken"
    assert not upward(edges), "\n".join(upward(edges))


def test_checker_flags_upward_and_sideways_arrows():
    """Companion: the rule itself fires on arrows that break the layering."""
    assert upward([("iga/core/capture.py", "iga.core", "iga.distill")])
    assert upward([("iga/core/mask.py", "iga.core", "iga.isomers")])  # same rank
    assert upward([("empirical/x.py", "empirical", "theory")])
    assert upward([("new/x.py", "new", "iga.core")])
    assert not upward([("theory/bound.py", "theory", "iga")])
    assert not upward([("empirical/runner.py", "empirical", "iga.distill")])
