"""The shape of the house, checked: no import cycles, operators that import nothing of bigain but
other operators, gradio only in the UI, diffusers internals only where patching and loading live."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "bigain"


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names}
            modules = {m for m in subs if m in MODULES}  # `from pkg import sub`: the submodule, not pkg
            out |= modules if modules == subs else {node.module} | modules
    return out


MODULES = {_module(p): p for p in ROOT.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    """Every import, lazy ones (inside functions) included: a lazy import that closes a loop is a cycle too."""
    return {m: {i for i in _imports(p, top_level_only=False) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_no_module_imports_its_importer() -> None:
    """Imports form a DAG: no module imports a module that (directly or not) imports it back."""
    graph = _graph()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            assert state.get(d) != 1, "import cycle: " + " → ".join([*path, m, d])
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_operators_are_pure() -> None:
    """ops/ imports torch, math and other operators only (no diffusers, no methods, no patching)."""
    for m, p in MODULES.items():
        if m.startswith("bigain.ops"):
            bad = {i for i in _imports(p, top_level_only=False) if i.startswith(("diffusers", "gradio"))}
            bad |= {
                i
                for i in _imports(p, top_level_only=False)
                if i.startswith("bigain.") and not i.startswith("bigain.ops")
            }
            assert not bad, (m, bad)


def test_only_the_ui_imports_gradio() -> None:
    for m, p in MODULES.items():
        if not m.startswith("bigain.ui"):
            assert not any(i.startswith("gradio") for i in _imports(p, top_level_only=False)), m


def test_only_the_adapters_know_model_families() -> None:
    """Outside backbones/ nothing tests which family a model is (the adapters and the zoo's data answer)."""
    for m, p in MODULES.items():
        if m.startswith("bigain.backbones"):
            continue
        text = p.read_text()
        assert "family ==" not in text and '["family"] ==' not in text and ".family" not in text, m
