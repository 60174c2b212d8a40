"""The rooms stay small and closed (issue 25): no module over 450 lines, no class over 25
methods, no function over 80 lines (the conformance table excepted), and no module reaching into
another's private members (``obj._name`` on anything but ``self``/``cls``, or ``from m import
_name``)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("runtime", "protocol", "firmware_sim", "trainer", "tools", "tessera")
#: the one function allowed past 80 lines: the conformance suite is a table of checks
LONG_OK = {("protocol/conformance.py", "run_conformance")}
#: attributes spelled with an underscore that are public by convention (NamedTuple's API, os)
CONVENTION = {"_replace", "_fields", "_asdict", "_make", "_field_defaults", "_exit"}


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text()


MODULES = list(_modules())


def test_there_are_modules_to_check():
    assert len(MODULES) > 80


def _violations(rel: str, src: str) -> list[str]:
    out = []
    if len(src.splitlines()) > 450:
        out.append(f"{rel}: {len(src.splitlines())} lines (at most 450)")
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ClassDef):
            methods = [b for b in node.body if isinstance(b, (ast.FunctionDef,
                                                              ast.AsyncFunctionDef))]
            if len(methods) > 25:
                out.append(f"{rel}: class {node.name} has {len(methods)} methods (at most 25)")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > 80 and (rel, node.name) not in LONG_OK:
                out.append(f"{rel}: {node.name} is {length} lines (at most 80)")
        elif isinstance(node, ast.Attribute):
            name = node.attr
            if name.startswith("_") and not name.startswith("__") and name not in CONVENTION \
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self",
                                                                                   "cls")):
                out.append(f"{rel}:{node.lineno}: {ast.unparse(node)} reaches a private member")
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    out.append(f"{rel}:{node.lineno}: imports private {a.name} from "
                               f"{node.module}")
    return out


@pytest.mark.parametrize("rel,src", MODULES, ids=[m[0] for m in MODULES])
def test_module_keeps_to_its_room(rel, src):
    assert _violations(rel, src) == []


def test_the_checker_finds_what_it_forbids():
    bad = ("from .x import _hidden\n"
           "class C:\n" + "".join(f"    def m{k}(self):\n        pass\n" for k in range(26))
           + "def f(o):\n    return o._secret\n"
           + "def g():\n" + "    x = 1\n" * 81)
    found = _violations("pkg/bad.py", bad)
    assert any("_hidden" in v for v in found) and any("26 methods" in v for v in found)
    assert any("o._secret" in v for v in found) and any("g is 82 lines" in v for v in found)
    assert _violations("pkg/ok.py", "def f(self):\n    return self._own, t._replace()\n") == []
