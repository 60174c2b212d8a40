"""Model files mutated field by field (tools/model_fuzz.py)."""

import numpy as np

from tessera.runtime.model_format import decode_model, read_model
from tessera.tools.model_fuzz import mutate_model


def test_mutants_are_seeded_varied_and_mostly_still_model_files(model4):
    with open(model4, "rb") as fh:
        blob = fh.read()
    m = read_model(model4)
    doc = dict(meta=m.meta, frontend=m.frontend, core=m.core, readout=m.readout,
               labels=m.labels)
    first = [mutate_model(blob, doc, np.random.default_rng(s)) for s in range(60)]
    again = [mutate_model(blob, doc, np.random.default_rng(s)) for s in range(60)]
    assert first == again                                   # a seed names its mutant
    kinds = {what.split(":")[0] for _, what in first}
    assert "bytes" in kinds and len(kinds) >= 2
    assert all(b != blob for b, _ in first)
    decodable = 0
    for b, _ in first:
        try:
            decode_model(b)
            decodable += 1
        except ValueError:
            pass
    assert decodable >= 20                 # most reach the field checks, past the envelope
