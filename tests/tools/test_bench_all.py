"""Every benchmark and its tables (tools/bench_all.py)."""


import pytest

from tessera.runtime.errors import InputError


def test_bench_all_writes_its_tables_between_markers(tmp_path):
    from tessera.tools.bench_all import BEGIN, END, markdown, run_all, write_tables

    r = run_all("unused.pt", "unused.tsr", quick=True, parts=("frontend",), say=lambda _: None)
    text = markdown(r)
    row = next(line for line in text.splitlines() if line.startswith("| 700 channels"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"{r['parts']['frontend']['result']['realtime_factor']}x"
    # the command once per table, above it, with the date and machine (not on every row)
    assert text.count("`tessera bench frontend --repeats 3`") == 1 and len(cells) == 2
    assert f"`tessera bench frontend --repeats 3` ({r['date']}; {r['machine']}):" in text
    md = tmp_path / "B.md"
    md.write_text("# history\n\nkept\n")
    write_tables(str(md), text)
    write_tables(str(md), "second run")                    # replaces, keeps the rest
    body = md.read_text()
    assert body.startswith("# history\n\nkept\n") and body.count(BEGIN) == body.count(END) == 1
    assert "second run" in body and row not in body
    md.write_text(f"# history\n{BEGIN}\nno end marker\n")
    with pytest.raises(InputError, match="only one of the bench markers"):
        write_tables(str(md), text)
    assert md.read_text() == f"# history\n{BEGIN}\nno end marker\n"     # untouched
    with pytest.raises(InputError, match="unknown part"):
        run_all("m.pt", "m.tsr", parts=("speed",))


def test_the_hear_table_shows_each_group_of_people(tmp_path):
    from tessera.tools.bench_all import markdown, run_all

    r = run_all("m.pt", "m.tsr", quick=True, parts=("hear",), say=lambda _: None)
    assert "hear" not in r["parts"]                     # skipped: no hear set given
    r["parts"]["hear"] = dict(episodes=100, command="tessera bench hear m.pt --data h.npz",
                              result={"choose_across_1": 61.5, "choose_across_5": 70.0,
                                      "fsdd_within_1": 87.4})
    text = markdown(r)
    assert "| choose (held out, chosen on) | 61.5 / 70.0 % | - / - % |" in text
    assert "| FSDD (validation) | - / - % | 87.4 / - % |" in text
