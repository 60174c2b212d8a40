"""`tessera train` / `tessera eval` end to end on the small corpus, config strictness, checkpoints."""

import json

import pytest

pytest.importorskip("torch")

from helpers import assert_clean_error  # noqa: E402
from helpers import tessera  # noqa: E402

from tessera.runtime.errors import InputError  # noqa: E402
from tessera.trainer.learning.config import load_config  # noqa: E402

TINY = ["--set", "train.iterations=6", "--set", "train.eval_every=3", "--set",
        "train.eval_episodes=20", "--set", "train.checkpoint_every=3", "--set", "data.queries=2",
        "--set", "data.shots=[1]", "--threads", "1", "--no-progress"]


def test_config_rejects_unknown_keys(tmp_path):
    with pytest.raises(InputError, match="meta.inner_lrr"):
        load_config(None, ["meta.inner_lrr=3"])
    with pytest.raises(InputError, match="unknown section"):
        load_config(None, ["metaa.inner_lr=3"])
    bad = tmp_path / "c.toml"
    bad.write_text("[meta]\ninner_lr = ")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(bad)
    good = tmp_path / "g.toml"
    good.write_text("[meta]\ninner_lr = 7\n[core]\nmax_hops = 1\n")
    cfg = load_config(good, ["meta.inner_steps=2"])
    assert cfg.meta.inner_lr == 7.0 and cfg.core.max_hops == 1 and cfg.meta.inner_steps == 2


def test_train_resume_and_eval(small_corpus, tmp_path):
    out = tmp_path / "run"
    r = tessera("train", "--data", small_corpus, "--out", out, "--json", *TINY)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["iterations"] == 6 and s["results"][0]["shots"] == 1
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines if "task_loss" in x] == [1, 2, 3, 4, 5, 6]
    # resuming a finished run with more iterations continues from the checkpoint
    r2 = tessera("train", "--data", small_corpus, "--out", out, "--json", "--resume",
                 *[a if a != "train.iterations=6" else "train.iterations=8" for a in TINY])
    assert_clean_error(r2, "different config")          # the config changed: refused, not mixed
    assert (out / "learning-curve.png").read_bytes()[:4] == b"\x89PNG"
    e = tessera("eval", out / "model.tsb", "--episodes", "30", "--shots", "1", "--split", "unseen",
                "all", "--json", "--heatmap", tmp_path / "h.png", "--learning-curve",
                tmp_path / "c.png")
    assert e.returncode == 0, e.stderr
    res = json.loads(e.stdout)
    assert res["heatmap_png"].endswith("h.png") and (tmp_path / "c.png").stat().st_size > 1000
    for key in ("accuracy", "ci95", "ways", "shots", "split", "episodes"):
        assert key in res
    assert [x["split"] for x in res["results"]] == ["unseen", "all"]
    assert "accuracy_unseen_queries" in res["results"][1]


def test_eval_bad_checkpoint(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_clean_error(tessera("eval", bad), "model.pt", "not a readable tessera checkpoint")
    assert_clean_error(tessera("eval", tmp_path / "none.pt"), "no such checkpoint")


@pytest.mark.parametrize("algorithm,extra", [("anil", []), ("maml", []), ("fomaml", []),
                                             ("reptile", []), ("transfer", []),
                                             ("anil", ['core.kind="gru"']),
                                             ("anil", ["core.dense=true"]),
                                             ("anil", ["meta.global_weight=0.5"])])
def test_every_meta_algorithm_takes_a_step(small_corpus, algorithm, extra):
    import dataclasses

    import torch

    from tessera.trainer.learning.config import load_config
    from tessera.trainer.learning.train import binned_data, meta_trainer, training_tasks

    cfg = load_config(None, [f'data.corpus="{small_corpus}"', f'meta.algorithm="{algorithm}"',
                             "meta.tasks_per_batch=2", "data.queries=2", "data.steps=20",
                             "core.rows=2", "core.cols=2", "core.tile=8",
                             f"meta.inner_steps={3 if algorithm == 'reptile' else 1}", *extra])
    data = binned_data(cfg)
    tasks = training_tasks(cfg, data)
    tr = meta_trainer(cfg, data, tasks)
    before = {k: v.detach().clone() for k, v in tr.core.params.items()}
    head = {k: v.detach().clone() for k, v in tr.head.items()}
    info = tr.step(tasks.sampler("train", 5, 1, 2))
    assert 0.0 <= info["acc"] <= 1.0 and info["iteration"] == 1
    assert not torch.equal(before["w_rec"], tr.core.params["w_rec"])
    assert not torch.equal(before["w_in"], tr.core.params["w_in"])
    assert dataclasses.asdict(tr.cfg)["rows"] == 2
    if extra == ['core.kind="gru"']:                  # three gates per neuron, no layout mask
        assert tr.core.params["w_rec"].shape == (32, 96) and bool(tr.core.masks["w_rec"].all())
    if extra == ["core.dense=true"]:                  # every pair but self-connections
        assert int(tr.core.masks["w_rec"].sum()) == 32 * 31
    if algorithm == "transfer":                       # a head over every seen class moved
        assert tr.head["w_cls"].shape[1] == len(tasks.seen) and tr.head["w_cls"].abs().sum() > 0
    if extra == ["meta.global_weight=0.5"]:           # the cosine head over every seen word
        assert tr.head["w_cls"].shape[1] == len(tasks.seen)
        assert not torch.equal(head["w_cls"], tr.head["w_cls"])
    else:
        assert algorithm == "transfer" or not tr.head


def test_eval_compares_baseline_models_on_the_same_episodes(small_corpus, tmp_path):
    runs = {}
    for name, sets in (("gru", ['core.kind="gru"']), ("transfer", ['meta.algorithm="transfer"',
                                                                    "meta.inner_steps=3"])):
        args = [a for x in sets for a in ("--set", x)]
        r = tessera("train", "--data", small_corpus, "--out", tmp_path / name, "--json", *TINY,
                    "--set", "core.rows=2", "--set", "core.cols=2", *args)
        assert r.returncode == 0, r.stderr
        runs[name] = tmp_path / name / "model.tsb"
    e = tessera("eval", runs["gru"], "--compare", runs["transfer"], runs["gru"], "--shots", "1",
                "--episodes", "40", "--json")
    assert e.returncode == 0, e.stderr
    res = json.loads(e.stdout)["results"]
    assert [r["method"] for r in res] == ["gru", "transfer", "gru"]
    assert res[1]["inner_steps"] == 3                 # the transfer model's own fine-tuning rule
    assert res[0]["accuracy"] == res[2]["accuracy"]   # same model, same episodes: same score


def test_incremental_enrollment_mechanics():
    """Well separated features: enrolling one class at a time keeps every class recognisable."""
    import numpy as np
    import torch

    from tessera.trainer.learning.adapt import incremental

    rng = np.random.default_rng(0)
    centres = torch.from_numpy(rng.standard_normal((6, 16))).float()
    labels = np.repeat(np.arange(6), 8)
    feats = centres[labels] + 0.05 * torch.randn(48, 16, generator=torch.Generator().manual_seed(1))
    feats = feats / feats.norm(dim=1, keepdim=True)          # unit norm, as the core's features
    r = incremental({"w_out": torch.tensor(5.0), "b_out": torch.tensor(5.0)}, feats, labels,
                    list(range(6)), shots=1, queries=5, runs=5)
    assert r["enrolled"] == [1, 2, 3, 4, 5, 6]
    assert min(r["accuracy"]) > 0.75          # chance is 1/6 with six words; prototypes: 1.0


def test_committed_default_model_recognises_new_words(small_corpus):
    """models/default/model.tsb loads and, with one readout step, tells unseen words apart."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "models" / "default" / "model.tsb"
    r = tessera("eval", path, "--data", small_corpus, "--shots", "1", "--episodes", "100",
                "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["split"] == "unseen" and res["episodes"] == 100
    assert res["accuracy"] > 0.5                 # chance: 0.2


def test_program_device_quantizes_the_committed_model():
    from pathlib import Path

    import torch

    from tessera.trainer.evaluation.evaluate import program_device
    from tessera.trainer.learning.train import load_model

    path = Path(__file__).resolve().parents[2] / "models" / "default" / "model.tsb"
    m = load_model(str(path))
    before = (m.core.params["w_rec"] * m.core.masks["w_rec"]).detach().clone()
    program_device(m, weight_bits=4)
    after = m.core.params["w_rec"].detach().clone()
    vals = after[before != 0]
    step = vals.abs()[vals != 0].min()
    assert torch.unique(torch.round(vals / step)).numel() <= 15   # 4 bits: -7..7 levels (the
    #                                                  extreme one computed to float rounding)
    assert torch.all(after[before == 0] == 0)
    program_device(m, weight_bits=4, write_noise=0.05, seed=1)
    assert not torch.equal(m.core.params["w_rec"].detach(), after)


def test_open_set_logits_send_unknown_words_to_none():
    """The prototype rule with a "none" logit: queries of a word that was not enrolled pick it,
    queries of enrolled words pick their word."""
    import torch

    from tessera.trainer.learning.meta import open_set_logits

    torch.manual_seed(0)
    centres = torch.eye(6)[:3] * 3 + 0.2                     # 3 words, well apart
    phi_s = torch.cat([centres, centres[2:] + 0.1])          # word 2 is not enrolled (y = 2)
    y_s = torch.tensor([0, 1, 2, 2])
    phi_q = centres + 0.05 * torch.randn(3, 6)
    logits = open_set_logits(phi_s, y_s, phi_q, 2, torch.tensor(10.0), torch.tensor(0.7))
    assert logits.shape == (3, 3)
    assert logits.argmax(1).tolist() == [0, 1, 2]            # word 2 -> index 2: "none"


def test_margin_and_open_ways_need_the_prototype_rule():
    import pytest

    from tessera.trainer.learning.meta import MetaConfig

    assert MetaConfig(margin=0.2).margin == 0.2
    for bad in (dict(margin=0.2, rule="softmax-step"), dict(margin=1.5),
                dict(open_ways=2, rule="softmax-step"), dict(open_ways=-1),
                dict(global_weight=0.5, algorithm="maml"), dict(global_weight=-1.0)):
        with pytest.raises(ValueError):
            MetaConfig(**bad)


def test_learned_time_constants_reach_the_chip(small_corpus, tmp_path):
    """A core with per-neuron time constants trains, exports them as per-neuron decays, and the
    chip runs them bit for bit as the trainer's integer mode does."""
    import numpy as np
    import torch

    from tessera.runtime.chip import Chip
    from tessera.trainer.learning.train import load_model

    out = tmp_path / "tau"
    r = tessera("train", "--data", small_corpus, "--out", out, *TINY, "--set",
                "core.tau_learn=true", "--set", "core.tau_spread=8.0", "--set",
                "meta.global_weight=0.5")
    assert r.returncode == 0, r.stderr
    from tessera.trainer.learning.bundle import read_bundle

    doc, arrays = read_bundle(str(out / "model.tsb"))              # the training-only word
    assert not any(n.startswith(("head/", "opt")) for n in arrays)   # classifier is not kept
    assert torch.load(out / "checkpoint.pt", weights_only=True)["head"]["w_cls"].shape[1] > 5
    tsr = tmp_path / "tau.tsr"
    assert tessera("export", out / "model.tsb", "--out", tsr).returncode == 0
    chip = Chip.load(tsr)
    p = load_model(str(out / "model.tsb")).core.params
    for key, field in (("a_mem", "leak_mult"), ("a_out", "trace_mult")):
        want = np.round(torch.sigmoid(p[key]).detach().numpy().astype(np.float64) * 65536)
        got = getattr(chip.tab, field)
        assert got.shape == (64 * 4,) and np.abs(got - want).max() <= 1
        assert got.max() - got.min() > 2000                   # really one decay per neuron
    par = tessera("parity", tsr, "--data", small_corpus, "--json", "--no-progress")
    assert par.returncode == 0, par.stderr
    assert json.loads(par.stdout)["bit_exact_fraction"] == 1.0


def test_one_class_per_meta_learning_algorithm_behind_one_interface():
    from tessera.runtime.errors import InputError
    from tessera.trainer.learning.algorithms import TRAINERS, trainer_class
    from tessera.trainer.learning.fewshot import MetaTrainer

    assert set(TRAINERS) == {"anil", "maml", "fomaml", "reptile", "transfer"}
    for name, cls in TRAINERS.items():
        assert trainer_class(name) is cls and issubclass(cls, MetaTrainer)
        assert cls.update is not MetaTrainer.update                    # each says its update
    assert trainer_class("fomaml").first_order and not trainer_class("maml").first_order
    with pytest.raises(InputError, match="one of anil"):
        trainer_class("sgd")
