"""Structure-aware fuzzing (Hypothesis) of message bodies and flash images: the board never
breaks and keeps answering."""


def test_structure_aware_fuzzing_never_breaks_the_board(model4):
    """Hypothesis draws every request type with valid, wrong, missing and extra fields, msgpack
    values of every type and depth, and bodies nested far deeper than any request: one answer
    that decodes and fits, and a ping still answered, every time."""
    from tessera.tools.structured_fuzz import fuzz_structured

    r = fuzz_structured(model4, examples=300, seed=2)
    assert r["failures"] == [] and r["examples"] == 300, r["failures"]
    assert r["answers"].get("BAD_FIELD", 0) > 5 and r["answers"].get("BAD_MESSAGE", 0) > 5
    assert sum(v for k, v in r["answers"].items() if not k.isupper()) > 10   # handlers reached
    assert len(r["rss_mb"]) == 11 and max(r["rss_mb"]) < r["rss_mb"][0] + 200     # measured


def test_mutated_flash_images_boot_and_answer(model4):
    from tessera.tools.structured_fuzz import fuzz_flash_images

    r = fuzz_flash_images(model4, examples=60, seed=3)
    assert r["failures"] == [] and r["examples"] == 60, r["failures"]
    assert r["booted_empty"] > 0 and r["booted_with_model"] > 0
