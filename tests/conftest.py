import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FSDD = Path(os.environ.get("TESSERA_FSDD", REPO.parent / "shared" / "data" / "fsdd"))


@pytest.fixture(scope="session")
def fsdd() -> Path:
    """The real-speech FSDD subset beside the checkout (tests only; the project never needs it)."""
    if not (FSDD / "7_george_0.wav").exists():
        pytest.skip(f"FSDD recordings not found at {FSDD}")
    return FSDD


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """The `small` preset corpus, built once per test session (about 6 s on 2 cores)."""
    from tessera.trainer.data.corpus import PRESETS, CorpusConfig, build_corpus

    path = tmp_path_factory.mktemp("corpus") / "small.h5"
    build_corpus(path, CorpusConfig(**PRESETS["small"], keep_audio=True), progress=False,
                 preset="small")
    return path



@pytest.fixture(scope="session")
def model4(tmp_path_factory) -> str:
    """The committed default model at 4-bit weights: the board's factory model as the package
    ships it (no torch needed; tests/trainer/test_openset.py checks that it is what
    ``tessera export models/default/model.tsb --bits 4`` writes), copied once per session."""
    import shutil

    from tessera.firmware_sim import factory_model

    path = tmp_path_factory.mktemp("m") / "m4.tsr"
    shutil.copyfile(factory_model(), path)
    return str(path)


@pytest.fixture(params=["numpy", "numba"])
def backend(request):
    """Run a test on the numpy steps (the reference) and on the compiled ones (numba)."""
    from tessera.runtime import compiled

    if request.param == "numba":
        pytest.importorskip("numba")
    with compiled.use(request.param):                         # this test picks the backend
        assert compiled.backend() == request.param
        yield request.param
