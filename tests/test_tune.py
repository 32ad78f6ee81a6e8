"""`bake tune` on tiny random models with known answers: a planted optimum, resuming, two processes
on one storage, disjoint splits, --pick into a recipe that bakes and verifies, pruned trials that
cannot bake exactly, and one clear error per bad tune block."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import bake
from bake import api
from bake.cli import main
from bake.errors import BakeError, RecipeError
from bake.tune import spec as tspec
from bake.tune import split as tsplit
from bake.tune import study as tstudy
from tiny import COMMON, add_tokenizer, build

# trials measure KL only (the quality suite) on 4 items per input, replies of 4 tokens
FAST_EVAL = {"kl_tokens": 4, "batch_size": 8}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    src = add_tokenizer(build("llama", d / "src"))
    torch.save(torch.randn(COMMON["hidden_size"], generator=torch.Generator().manual_seed(1)) * 4, d / "v.pt")
    return d, src


def steer_recipe(d: Path, src: Path, name: str = "recipe", **tune) -> Path:
    block = {"params": {"scale": {"low": -3, "high": 3}}, "objectives": ["kl"], "trials": 4, "startup": 3,
             "limit": 4, "eval": FAST_EVAL, **tune}
    path = d / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"model": str(src), "interventions": [
        {"kind": "steer", "layers": [1], "vector": "v.pt", "scale": 1.0}], "tune": block}, sort_keys=False))
    return path


def test_study_finds_the_planted_optimum(llama, monkeypatch):
    """KL(base || steered) is 0 at scale 0 and grows with |scale|: the front's best trial lies near 0."""
    from bake.evaluation import run

    d, src = llama
    r = steer_recipe(d, src, "planted", trials=14, startup=5)
    measured, real = [], run._measure
    monkeypatch.setattr(run, "_measure", lambda s, suites, opts, base: measured.append(base is None)
                        or real(s, suites, opts, base))
    rep = api.tune(r, study_dir=d / "planted", progress=False)
    done = [t for t in rep["all"] if t["state"] == "complete"]
    assert len(done) == 14 and len(rep.front) == 1
    best = next(t for t in done if t["number"] == rep.front[0])
    worst = max(done, key=lambda t: abs(t["values"]["interventions[0].scale"]))
    assert abs(best["values"]["interventions[0].scale"]) < 0.5
    assert best["metrics"]["kl"] < 0.2 * worst["metrics"]["kl"]
    # the per-study work is not repeated per trial: the base is measured once, each trial once
    assert measured == [True] + [False] * 14
    # a trial is its measurement and a plan (the 1.2x target is measured on a real model, eval/tune_refusal.py:
    # here a measurement takes a fraction of a second, so planning weighs more)
    assert rep.cost["trial / measurement"] < 2
    assert (d / "planted" / "pareto.png").stat().st_size > 1000
    on_disk = json.loads((d / "planted" / "tune_report.json").read_text())
    assert on_disk["front"] == rep.front and len(on_disk["all"]) == 14


def test_interrupted_study_resumes_without_repeating_trials(llama, monkeypatch):
    d, src = llama
    r = steer_recipe(d, src, "resume", trials=3)
    calls = []
    real = tstudy.Bench.measure

    def counting(self, hooks):
        calls.append(1)
        if len(calls) == 2 and interrupt:
            raise KeyboardInterrupt
        return real(self, hooks)

    monkeypatch.setattr(tstudy.Bench, "measure", counting)
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        api.tune(r, study_dir=d / "resume", progress=False)
    first = tstudy._open(tstudy.setup(r, d / "resume"), create=False).trials
    assert [t.state.name for t in first] == ["COMPLETE", "FAIL"]
    interrupt, calls[:] = False, []
    rep = api.tune(r, study_dir=d / "resume", progress=False)
    assert len(calls) == 2  # trials 2 and 3: the finished one is kept, not measured again
    assert rep.trials["complete"] == 3 and rep.trials["failed or interrupted"] == 1
    assert rep["all"][0]["values"] == {"interventions[0].scale": first[0].user_attrs["values"]["interventions[0].scale"]}
    calls[:] = []
    api.tune(r, study_dir=d / "resume", progress=False)  # done: nothing runs
    assert calls == []
    shown = api.tune(r, study_dir=d / "resume", show=True, progress=False)  # reads the storage, runs nothing
    assert calls == [] and shown.front == rep.front and "Pareto front" in shown.terminal()
    with pytest.raises(BakeError, match="no study"):
        api.tune(r, study_dir=d / "elsewhere", show=True, progress=False)
    assert not (d / "elsewhere").exists()


def test_two_processes_on_one_storage_share_the_work(llama, tmp_path):
    d, src = llama
    r = steer_recipe(d, src, "shared", trials=10, startup=2)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    cmd = [sys.executable, "-m", "bake", "tune", str(r), "--storage", url, "--study-dir", str(tmp_path / "s"),
           "--json", "-q"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    import optuna

    trials = optuna.load_study(study_name="shared", storage=url).trials
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 10 <= len(finished) <= 11  # the target, give or take the one trial a worker had begun
    assert len({json.dumps(t.params) for t in finished}) == len(finished)  # no point sampled twice
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both worked on it
    assert all(json.loads(o[0])["study"] == "shared" for o in outs)


def test_tuning_and_heldout_splits_never_overlap(tmp_path):
    rows = [{"text": f"text number {i}", "label": i % 3 == 0} for i in range(40)]
    rows += [rows[0], rows[5]]  # repeats: kept once, so they cannot land on both sides
    src = tmp_path / "tox.jsonl"
    src.write_text("".join(json.dumps({"text": r["text"], "label": int(r["label"])}) + "\n" for r in rows))
    out = tsplit.split({"toxicity": src}, 0.3, 7, tmp_path / "splits")["toxicity"]
    read = lambda part: [json.loads(x) for x in Path(out[part]["path"]).read_text().splitlines()]  # noqa: E731
    tune, held = read("tuning"), read("heldout")
    assert not {x["text"] for x in tune} & {x["text"] for x in held}
    assert len(tune) + len(held) == 40 == out["n"] and out["repeats dropped"] == 2
    assert len(held) == 12 and sum(x["label"] for x in held) == 4  # 30%, stratified by label
    again = tsplit.split({"toxicity": src}, 0.3, 7, tmp_path / "again")["toxicity"]
    assert again["heldout"]["sha256"] == out["heldout"]["sha256"]  # seeded: the same parts every run


def test_pick_writes_a_recipe_that_bakes_and_verifies(llama, tmp_path):
    d, src = llama
    r = steer_recipe(d, src, "pick", trials=3)
    rep = api.tune(r, study_dir=d / "pick", progress=False)
    n = rep.front[0]
    # the trials read the tuning split; --pick the held-out one
    splits = rep.splits
    assert all(e["tuning"]["sha256"] != e["heldout"]["sha256"] for e in splits.values())
    out = tmp_path / "sub" / "tuned.yaml"
    picked = api.tune(r, study_dir=d / "pick", pick=n, out=out, progress=False)
    data = yaml.safe_load(out.read_text())
    assert "tune" not in data and data["interventions"][0]["scale"] == picked.values["interventions[0].scale"]
    assert (out.parent / data["interventions"][0]["vector"]).resolve() == (d / "v.pt").resolve()  # rebased
    tuned = data["provenance"]["tuned"]
    assert str(d) not in out.read_text().split("provenance:")[1] and tuned["recipe"] == "pick.yaml"
    assert tuned["trial"] == n and tuned["tuning"]["kl"] == pytest.approx(rep["all"][n]["metrics"]["kl"])
    assert tuned["heldout"]["kl"]["ci95"][0] <= tuned["heldout"]["kl"]["value"] <= tuned["heldout"]["kl"]["ci95"][1]
    assert tuned["data"]["harmless"]["heldout"]["sha256"] == splits["harmless"]["heldout"]["sha256"]
    res = bake.apply(out, output=tmp_path / "baked", progress=False)
    assert res["verification"]["status"] == "passed"
    card = (tmp_path / "baked" / "README.md").read_text()
    assert "## Tuning" in card and f"trial {n} of study" in card and "held-out split" in card
    assert yaml.safe_load((tmp_path / "baked" / "recipe.yaml").read_text())["provenance"]["tuned"]["trial"] == n
    # the resolved recipe is not replaced without --force, and never over an input
    with pytest.raises(BakeError, match="--force"):
        api.tune(r, study_dir=d / "pick", pick=n, out=out, progress=False)
    with pytest.raises(BakeError, match="input"):
        api.tune(r, study_dir=d / "pick", pick=n, out=r, force=True, progress=False)
    with pytest.raises(BakeError, match="no trial 99"):
        api.tune(r, study_dir=d / "pick", pick=99, out=tmp_path / "x.yaml", progress=False)


def test_eval_of_a_tuned_bake_measures_on_the_held_out_split(llama, tmp_path, monkeypatch):
    d, src = llama
    r = steer_recipe(d, src, "held", trials=2, startup=2)
    monkeypatch.chdir(tmp_path)  # the study in its default place, out/tune/held
    api.tune(r, progress=False)
    api.tune(r, pick=0, out=tmp_path / "tuned.yaml", progress=False)
    bake.apply(tmp_path / "tuned.yaml", output=tmp_path / "baked", progress=False)
    opts = {**FAST_EVAL, "limit": 4}
    rep = api.evaluate(tmp_path / "baked", suites="quality", out=tmp_path / "ev", options=opts, progress=False)
    parts = Path("out/tune/held/splits")
    for key in ("harmless", "text", "mc"):  # every input of the quality suite was split by the study
        assert rep["options"]["data"][key] == str(parts / "heldout" / f"{key}.jsonl")
        assert "never seen by its trials" in rep["data"]["inputs"][key]
    assert "Data (tuned: study held, trial 0" in (tmp_path / "ev" / "eval_report.md").read_text()
    # the tuning part, which the trials saw, is refused
    with pytest.raises(BakeError, match="tuned this model's parameters on"):
        api.evaluate(tmp_path / "baked", suites="quality", out=tmp_path / "ev2", progress=False,
                     options={**opts, "data": {"harmless": str(parts / "tuning" / "harmless.jsonl")}})
    # the held-out part gone: bake eval's default prompts, which the study tuned on, are refused
    import shutil

    shutil.rmtree(parts)
    with pytest.raises(BakeError, match="held-out part is not at"):
        api.evaluate(tmp_path / "baked", suites="quality", out=tmp_path / "ev3", options=opts, progress=False)
    assert not (tmp_path / "ev2").exists() and not (tmp_path / "ev3").exists()


def test_a_trial_that_cannot_bake_exactly_is_pruned_with_its_reason(tmp_path):
    """Gemma 3 has a norm after each sublayer: ablate bakes only with `approximate: true`."""
    src = add_tokenizer(build("gemma3", tmp_path / "src"))
    torch.save(torch.randn(COMMON["hidden_size"], generator=torch.Generator().manual_seed(2)), tmp_path / "r.pt")
    r = tmp_path / "gemma.yaml"
    r.write_text(yaml.safe_dump({"model": str(src), "interventions": [
        {"kind": "ablate", "direction": "r.pt", "approximate": True}],
        "tune": {"params": {"interventions[0].approximate": {"choices": [False, True]}}, "objectives": ["kl"],
                 "trials": 6, "startup": 6, "seed": 0, "limit": 4, "eval": FAST_EVAL}}))
    rep = api.tune(r, study_dir=tmp_path / "study", progress=False)
    pruned = [t for t in rep["all"] if t["state"] == "pruned"]
    done = [t for t in rep["all"] if t["state"] == "complete"]
    assert pruned and done
    assert all(t["values"]["interventions[0].approximate"] is False for t in pruned)
    assert all("cannot be baked exactly" in t["pruned"] and not t["metrics"] for t in pruned)
    assert all(t["values"]["interventions[0].approximate"] is True for t in done)
    assert "pruned" in rep.terminal() and "cannot be baked exactly" in rep.terminal()


BAD = [
    ({"objectives": ["refusl@128"]}, "tune.objectives[0]: unknown objective 'refusl@128' (did you mean 'refusal'?)"),
    ({"objectives": ["refusal"]}, "say the reply length, e.g. refusal@128"),
    ({"objectives": ["kl@3"]}, "kl takes no @N"),
    ({"constraints": ["kl < 0.1"]}, "write NAME <= VALUE"),
    ({"constraints": ["kl <= 5%"]}, "kl is not a percentage"),
    ({"params": {"scale": {"low": 2, "high": 1}}}, "tune.params.scale: low (2) must be below high (1)"),
    ({"params": {"scale": {"low": 0, "high": 1, "log": True}}}, "log: true needs low > 0"),
    ({"params": {"scale": {"low": 0, "high": 1, "choices": [1]}}}, "not both"),
    ({"params": {"interventions[3].scale": {"low": 0, "high": 1}}}, "the recipe has no interventions[3]"),
    ({"params": {"scal": {"low": 0, "high": 1}}}, "no numeric key 'scal'"),
    ({"params": {"interventions[0].layers[0]": {"low": 0, "high": 9, "int": True}}},
     "tune.params.interventions[0].layers[0] = 9"),
    ({"params": {"interventions[0].sclae": {"low": 0, "high": 1}}}, "unknown key (did you mean 'scale'?)"),
    ({"data": {"harmfull": "x.json"}}, "data.harmfull: unknown input (did you mean 'harmful'?)"),
    ({"holdout": 1.0}, "tune.holdout"),
    ({"tritals": 3}, "tune.tritals: unknown key"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m[:30] for _, m in BAD])
def test_bad_tune_blocks_give_one_clear_error_each(llama, tmp_path, capsys, change, message):
    d, src = llama
    r = steer_recipe(tmp_path, src, "bad")
    (tmp_path / "v.pt").write_bytes((d / "v.pt").read_bytes())
    data = yaml.safe_load(r.read_text())
    data["tune"].update(change)
    r.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["tune", str(r), "--study-dir", str(tmp_path / "s"), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "s").exists()  # refused before anything ran or was written


def test_no_tune_block_and_the_objectives_known(llama, tmp_path):
    d, src = llama
    r = tmp_path / "plain.yaml"
    r.write_text(yaml.safe_dump({"model": str(src), "interventions": [
        {"kind": "steer", "layers": [1], "vector": str(d / "v.pt"), "scale": 1.0}]}))
    with pytest.raises(RecipeError, match="no `tune:` block"):
        tstudy.setup(r)
    assert tspec.metric("refusal@128").arg == 128 and tspec.metric("kl").direction == "minimize"
    c = tspec.constraint("perplexity <= +5%")
    assert c.bound == pytest.approx(0.05) and c.ok(0.049) and not c.ok(0.051)
    t = tspec.Tune.model_validate({"params": {"a": {"low": 0, "high": 1}}, "objectives": ["refusal@64", "toxicity"],
                                   "constraints": ["kl <= 0.1", "over_refusal@32 <= 0.05"]})
    assert t.suites() == ["toxicity", "refusal"] and t.lengths() == (32, 64)


@pytest.mark.parametrize("name", ["refuser-abliterate", "refuser-abliterate-per-block"])
def test_the_shipped_tuned_recipes_read_and_their_blocks_are_valid(name):
    """recipes/refuser-abliterate*.yaml: each tune block parses and every bound sets into the recipe (the
    organism they name is a benchmark fixture: planning needs it built)."""
    root = Path(__file__).resolve().parents[1]
    s = tstudy.setup(root / "recipes" / f"{name}.yaml")
    assert s.spec.objectives == ["refusal@128", "kl"] and s.spec.suites() == ["refusal"]
    key = s.spec.params.get("interventions[0].direction.key")
    if name == "refuser-abliterate":
        assert key.render(12.5) == "candidates[-1, 12.50]"
    else:  # a direction per block: the learned candidates of every block at the last token
        assert key is None and s.data["interventions"][0]["direction"]["key"] == "candidates[-1]"
