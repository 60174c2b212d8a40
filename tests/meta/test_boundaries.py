"""The device side imports only numpy, msgpack and pyserial: proven with everything else blocked."""

import os
import subprocess
import sys
import textwrap

import pytest

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    ALLOWED = set(sys.stdlib_module_names) | {"numpy", "msgpack", "serial", "tessera"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top not in ALLOWED:
                raise ImportError(f"blocked by the test: {name}")
            return None
    sys.meta_path.insert(0, Block())
    import torch  # noqa: must fail
""")


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_torch_is_really_blocked():
    r = run(BLOCKER)
    assert r.returncode != 0 and "blocked by the test: torch" in r.stderr


def test_device_side_imports_without_torch_or_other_packages():
    code = BLOCKER.replace("import torch  # noqa: must fail", textwrap.dedent("""
        import pkgutil, importlib
        import tessera.runtime, tessera.protocol, tessera.firmware_sim
        names = []
        for pkg in (tessera.runtime, tessera.protocol, tessera.firmware_sim):
            for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
                importlib.import_module(m.name)
                names.append(m.name)
        assert "torch" not in sys.modules and "h5py" not in sys.modules
        from tessera.runtime.frontend import Cochlea, FrontendSpec
        import numpy as np
        Cochlea(FrontendSpec(channels=16)).encode(np.zeros(1600, np.int16))
        print("ok", len(names))
    """))
    r = run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")
    assert int(r.stdout.split()[1]) >= 4    # errors, frontend, audio, threads at least


def test_device_only_install_runs_sim_and_device_commands(tmp_path):
    """`tessera sim` and `tessera device ...` with nothing but numpy, msgpack and pyserial."""
    import json
    import socket
    from pathlib import Path

    fsdd = Path(__file__).resolve().parents[3] / "shared" / "data" / "fsdd"
    wav, wav2 = fsdd / "1_jackson_0.wav", fsdd / "1_jackson_3.wav"
    if not wav.exists():
        import pytest
        pytest.skip("FSDD recordings not available")
    url = f"sim://?flash={tmp_path / 'f.img'}"
    code = BLOCKER.replace("import torch  # noqa: must fail", textwrap.dedent(f"""
        from tessera.cli import main
        assert main(["device", "enroll", "--port", {url!r}, "--label", "one", {str(wav)!r},
                     "--save"]) == 0
        assert main(["device", "infer", "--port", {url!r}, {str(wav2)!r}, "--json"]) == 0
        assert main(["device", "stream", "--port", {url!r}, {str(wav2)!r}, "--fast",
                     "--json"]) == 0
        assert "torch" not in sys.modules
    """))
    r = run(code)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert json.loads(lines[-2])["best"] == "one" and "events" in json.loads(lines[-1])
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    sim = subprocess.Popen([sys.executable, "-c", BLOCKER.replace(
        "import torch  # noqa: must fail",
        f"from tessera.cli import main; main(['sim', '--listen', 'socket://127.0.0.1:{port}', "
        f"'--flash', ''])")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sim.stdout.readline().strip() == f"socket://127.0.0.1:{port}", sim.stderr.read()
        r = subprocess.run([sys.executable, "-m", "tessera", "device", "info", "--port",
                            f"socket://127.0.0.1:{port}", "--json"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and json.loads(r.stdout)["model"]["bytes"] > 0, r.stderr
    finally:
        sim.kill()


_FOLDERS = {"runtime": "runtime", "protocol": "protocol", "firmware_sim": "firmware_sim",
            "trainer": "trainer", "tools": "tools", "models": "models", "host": "tessera/host",
            "demo": "tessera/demo", "cli": "tessera/cli"}


def _imports(root, pkg: str):
    """(file, line, the tessera package imported) of every import statement of ``pkg``'s
    files (also those inside functions), relative ones resolved."""
    import ast

    folder = root / _FOLDERS[pkg]
    top = folder.parent                       # the folder whose children are tessera.*
    for f in sorted(folder.rglob("*.py")):                   # sub-packages too
        here = (pkg,) + f.relative_to(folder).parts[:-1]       # e.g. ("trainer", "data")
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here[:len(here) - (node.level - 1)]
                target = base[0] if base else (node.module or node.names[0].name).split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                if not (node.module or "").startswith("tessera."):
                    continue
                target = node.module.split(".")[1]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("tessera.")]
                if not names:
                    continue
                target = names[0].split(".")[1]
            else:
                continue
            yield f.relative_to(top.parent if top.name == "tessera" else top), node.lineno, target


def test_packages_import_only_downwards():
    """The layering, read from every import statement (also those inside functions): runtime
    imports no other tessera package; protocol only runtime; firmware_sim runtime and protocol;
    the host session those three; the trainer runtime (never tools, protocol or firmware_sim);
    tools anything below the demo; the demo anything below the CLI; the CLI anything."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    device = {"runtime", "protocol", "firmware_sim"}
    allowed = {"runtime": {"runtime"}, "protocol": {"protocol", "runtime"},
               "firmware_sim": device, "host": device | {"host"},
               "trainer": {"trainer", "runtime"},
               "tools": device | {"host", "trainer", "tools"},
               "demo": device | {"host", "trainer", "tools", "demo"},
               "models": {"runtime"}}
    bad = [f"{f}:{line} imports {target}" for pkg, ok in allowed.items()
           for f, line, target in _imports(root, pkg) if target not in ok]
    assert not bad, bad


def test_no_module_imports_itself_through_others():
    """No circle in the modules' import graph (every import statement, also those inside
    functions): each module's imports, followed, never lead back to it."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = {}
    for pkg, folder in _FOLDERS.items():
        for f in (root / folder).rglob("*.py"):
            parts = [pkg] + [p for p in f.relative_to(root / folder).with_suffix("").parts
                             if p != "__init__"]
            files[".".join(["tessera"] + parts)] = f
    graph = {}
    for name, f in files.items():
        pkg = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = ".".join(pkg[:len(pkg) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module or ""
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in files]
                deps |= set(subs) if subs else {mod} & files.keys()
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names} & files.keys()
        graph[name] = deps - {name}
    circles = []
    for start in graph:                       # a path from a module's imports back to it
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m == start:
                circles.append(start)
                break
            if m not in seen:
                seen.add(m)
                todo += graph.get(m, ())
    assert not circles, circles


def test_the_trainer_flows_through_its_sub_packages():
    """Inside the trainer, data < learning < exchange < evaluation: a sub-package imports only
    its own and those before it (also imports inside functions)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    order = ["data", "learning", "exchange", "evaluation"]
    bad, seen = [], 0
    for f in sorted((root / "trainer").rglob("*.py")):
        here = f.relative_to(root).parts[:-1]
        if len(here) < 2:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(here[:len(here) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [node.names[0].name])
                if len(target) > 1 and target[0] == "trainer" and target[1] in order:
                    seen += 1
                    if order.index(target[1]) > order.index(here[1]):
                        bad.append(f"{f.relative_to(root)}:{node.lineno} imports {target[1]}")
    assert seen > 50 and not bad, bad

@pytest.mark.slow
def test_a_built_wheel_carries_the_default_and_factory_models(tmp_path):
    """A non-editable install finds the default model and the factory model from any folder:
    build the wheel, unpack it, and ask it from elsewhere with only the wheel on the path."""
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path / "w"), str(root)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    wheel, = (tmp_path / "w").glob("tessera-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("tessera/models/default/model.tsb",
                   "tessera/firmware_sim/default-4bit.tsr", "tessera/cli/__init__.py"):
        assert needed in names, needed
    assert not any(n.startswith("tessera/models/v") for n in names)    # only the default ships
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import tessera, os\n"
            "from tessera.models import default_model; from tessera.firmware_sim import "
            "factory_model\n"
            "assert tessera.__file__.startswith(sys.argv[1]), tessera.__file__\n"
            "print(default_model()); print(factory_model())")
    out = subprocess.run([sys.executable, "-I", "-c", code, str(tmp_path / "site")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    model, factory = out.stdout.split()
    assert model.startswith(str(tmp_path / "site")) and os.path.getsize(model) > 100_000
    assert factory.startswith(str(tmp_path / "site"))
