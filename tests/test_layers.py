"""The package's shape: its layers (docs/architecture.md, "Layers": every import runs down or
within its room, no two rooms of one line import each other, no modules import each other in a
circle) and short functions."""

from __future__ import annotations

import ast
import re

import pytest

from conftest import REPO
from semiseg.fingerprint import PACKAGE, module_imports

ARCHITECTURE = REPO / "docs" / "architecture.md"


def layers(text: str) -> list[list[str]]:
    """The rooms of each line of the ```layers block, top line first, as module names."""
    block = re.search(r"^```layers\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert block, f"{ARCHITECTURE}: no ```layers block"
    return [[f"semiseg.{room.strip()}" for room in line.split("|")] for line in block.group(1).splitlines()
            if line.strip()]


def modules() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["semiseg", *path.relative_to(PACKAGE).with_suffix("").parts]
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def room_of(module: str, floors: list[list[str]]) -> tuple[int, str] | None:
    """(line from the top, room) of a module: the room that is the module or a package holding it."""
    for level, rooms in enumerate(floors):
        for room in rooms:
            if module == room or module.startswith(room + "."):
                return level, room
    return None


def violations(imports: dict[str, set[str]], floors: list[list[str]]) -> list[str]:
    """Every import that leaves its room for one on its own line or above, and every module in no room.
    The package's own face (``semiseg``, the version) may be imported from anywhere."""
    problems = []
    for module, targets in sorted(imports.items()):
        here = room_of(module, floors)
        if here is None:
            if module != "semiseg":
                problems.append(f"{module}: in no room of the layers in {ARCHITECTURE.name}")
            continue
        for target in sorted(targets - {"semiseg"}):
            there = room_of(target, floors)
            if there is None or there[1] == here[1]:
                continue
            if there[0] < here[0]:
                problems.append(f"{module} -> {target}: imports upward ({here[1]} under {there[1]})")
            elif there[0] == here[0]:
                problems.append(f"{module} -> {target}: {here[1]} and {there[1]} share a line and must not import "
                                "each other")
    return problems


def circles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The modules that import each other in a loop (strongly connected components of two or more)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(imports.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(imports):
        if v not in index:
            visit(v)
    return found


def package_imports() -> dict[str, set[str]]:
    return {m: set(module_imports(m)) - {m} for m in modules()}


def test_every_import_runs_down_the_layers():
    floors = layers(ARCHITECTURE.read_text(encoding="utf-8"))
    assert violations(package_imports(), floors) == []


def test_no_modules_import_each_other_in_a_circle():
    assert circles(package_imports()) == []


#: The longest a function (or method) of src/ may be, docstring included.
MAX_FUNCTION_LINES = 80


def long_functions(source: str, name: str) -> list[str]:
    return [f"{name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_no_function_is_longer_than_80_lines():
    found = [line for path in sorted(PACKAGE.rglob("*.py"))
             for line in long_functions(path.read_text(encoding="utf-8"), path.relative_to(PACKAGE).as_posix())]
    assert found == [], "split these along their seams:\n" + "\n".join(found)


# ----------------------------------------------------------------------------- the checks themselves
def test_a_long_function_is_named_with_its_length():
    def source(lines):  # a method of `lines` lines: its def and lines - 1 statements
        return "class A:\n    def f(self):\n" + "".join(f"        x{i} = {i}\n" for i in range(lines - 1))

    assert long_functions(source(MAX_FUNCTION_LINES + 1), "a.py") == ["a.py:2 f: 81 lines"]
    assert long_functions(source(MAX_FUNCTION_LINES), "a.py") == []


FLOORS = [["semiseg.cli"], ["semiseg.engine", "semiseg.metrics"], ["semiseg.config"], ["semiseg.io"]]


@pytest.mark.parametrize("module, target, problem", [
    ("semiseg.io", "semiseg.config", "semiseg.io -> semiseg.config: imports upward (semiseg.io under semiseg.config)"),
    ("semiseg.engine.loop", "semiseg.metrics.binary", "share a line"),
    ("semiseg.extra", "semiseg.io", "semiseg.extra: in no room"),
])
def test_an_upward_sideways_or_homeless_import_is_named(module, target, problem):
    found = violations({module: {target}}, FLOORS)
    assert len(found) == 1 and problem in found[0]


def test_downward_and_in_room_imports_pass():
    assert violations({"semiseg.cli": {"semiseg.engine.loop", "semiseg.io", "semiseg"},
                       "semiseg.engine.loop": {"semiseg.engine.data", "semiseg.config"}}, FLOORS) == []


def test_a_circle_is_found_through_a_third_module():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
