"""The device side imports only numpy, msgpack and pyserial: proven with everything else blocked."""

import subprocess
import sys
import textwrap

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
