"""No import cycle in certfleet or node_agent, imports under TYPE_CHECKING included (the
import-linter contract "no import cycle" says the same for ``make lint``; this test names
the modules of a cycle). And the tests' own layout: every test module lives in a tier
(tests/unit/, tests/integration/, tests/system/), under a name no other tier uses, and no
test module imports another test module, in its tier or another: what several share lives
in tests/plugins/."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

TESTS = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "system")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_larger_graph() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(edges) == [["a", "b", "c"]]


def test_no_module_of_certfleet_or_node_agent_imports_itself_back() -> None:
    graph = grimp.build_graph("certfleet", "node_agent", cache_dir=None)
    modules = {m for m in graph.modules if m.split(".")[0] in ("certfleet", "node_agent")}
    edges = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
    assert len(modules) > 100
    assert cycles(edges) == []


def imported_test_modules(source: str, package: str) -> set[str]:
    """The test modules (``tests.test_*``, ``tests.<tier>.test_*``) ``source``, a module of
    ``package``, imports, anywhere in it (in a function or under ``TYPE_CHECKING`` too),
    absolute or relative."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != "tests":
                continue
            depth = 2 if len(parts) > 1 and parts[1] in TIERS else 1
            if len(parts) > depth and parts[depth].startswith("test_"):
                found.add(".".join(parts[: depth + 1]))
    return found


def test_the_finder_sees_every_way_to_import_a_test_module() -> None:
    source = (
        "import tests.test_a\n"
        "from tests.test_b import thing\n"
        "from tests import test_c, plugins\n"
        "from .test_d import thing\n"
        "from . import test_e\n"
        "def later():\n    from tests.test_f import thing\n"
        "from tests.plugins.sandbox import Sandbox\n"
        "from ..test_g import thing\n"
    )
    assert imported_test_modules(source, "tests") == {f"tests.test_{letter}" for letter in "abcdef"}
    assert imported_test_modules(source, "tests.plugins") == {
        f"tests.test_{letter}" for letter in "abcfg"
    }
    across_tiers = (
        "import tests.system.test_h\n"
        "from tests.integration.test_i import thing\n"
        "from tests.integration import test_j, helper\n"
        "from .test_k import thing\n"
        "from . import test_l\n"
        "from ..system.test_m import thing\n"
        "from ..integration import test_n\n"
        "from ..plugins.sandbox import Sandbox\n"
    )
    assert imported_test_modules(across_tiers, "tests.unit") == {
        "tests.system.test_h",
        "tests.integration.test_i",
        "tests.integration.test_j",
        "tests.unit.test_k",
        "tests.unit.test_l",
        "tests.system.test_m",
        "tests.integration.test_n",
    }


def test_every_test_module_lives_in_a_tier_under_a_name_of_its_own() -> None:
    modules = sorted(TESTS.rglob("test_*.py"))
    placed = {tier: [path for path in modules if path.parent == TESTS / tier] for tier in TIERS}
    outside = {path.relative_to(TESTS).as_posix() for path in modules}
    outside -= {path.relative_to(TESTS).as_posix() for tier in TIERS for path in placed[tier]}
    assert sorted(outside) == [], "move these into tests/unit, tests/integration or tests/system"
    assert all(placed[tier] and (TESTS / tier / "__init__.py").is_file() for tier in TIERS)
    names = [path.name for path in modules]
    assert sorted({name for name in names if names.count(name) > 1}) == []


def test_no_test_module_imports_another_test_module() -> None:
    modules = sorted(TESTS.rglob("*.py"))
    assert len(modules) > 50
    imports = {
        str(path.relative_to(TESTS.parent)): sorted(
            imported_test_modules(
                path.read_text(encoding="utf-8"),
                ".".join(path.relative_to(TESTS.parent).parent.parts),
            )
        )
        for path in modules
    }
    assert {path: found for path, found in imports.items() if found} == {}


def test_a_test_is_marked_with_the_tier_of_its_directory(request: pytest.FixtureRequest) -> None:
    marks = {mark.name for mark in request.node.iter_markers()}
    assert marks & set(TIERS) == {"unit"}
