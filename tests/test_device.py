"""The device rule (bake.model.device): --device is checked before anything runs, every forward pass
of a command runs where it says, results come back to the CPU, a dtype the device lacks falls back
to the CPU with the reason. The CPU runs the same code path with the device given explicitly; the
tests marked `cuda` compare a GPU with the CPU and run only where torch sees one."""

from __future__ import annotations

import json

import pytest
import torch

from bake.cli import main
from bake.errors import BakeError
from bake.model import device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
@pytest.mark.parametrize("spec,message", [
    ("cuda", "sees no CUDA device"), ("cuda:1", "sees no CUDA device"), ("gpu", "not a device"),
    ("tpu", "not a device"), ("meta", "bake runs its forward passes on"), ("", None), ("auto", None), ("CPU", None)])
def test_a_device_is_checked_against_this_machine(spec, message):
    if message is None:
        assert device.resolve(spec) == torch.device("cpu") or torch.backends.mps.is_available()
        return
    with pytest.raises(BakeError, match=message):
        device.resolve(spec)


def test_using_chooses_for_the_command_and_restores():
    outer = device.current()
    with device.using("cpu") as dev:
        assert dev == torch.device("cpu") and device.current() == dev
        with device.using(None) as same:  # no choice keeps the current one
            assert same == dev
    assert device.current() == outer


def test_a_dtype_the_device_lacks_runs_on_the_cpu_and_says_why():
    dev, why = device.for_dtype(torch.float64, torch.device("mps"))
    assert dev == torch.device("cpu") and "MPS has no float64" in why
    assert device.for_dtype(torch.float32, torch.device("mps")) == (torch.device("mps"), "")
    assert device.for_dtype(torch.float64, torch.device("cuda", 0)) == (torch.device("cuda", 0), "")


def test_inputs_follow_the_model_and_a_streamed_skeleton_runs_on_the_cpu():
    lin = torch.nn.Linear(3, 2)
    batch = {"input_ids": torch.ones(1, 3, dtype=torch.long), "note": "kept"}
    assert device.to_model(lin, batch)["input_ids"].device.type == "cpu" and device.to_model(lin, batch)["note"] == "kept"
    meta = torch.nn.Linear(3, 2, device="meta")
    assert device.to_model(meta, torch.ones(2)).device.type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_an_unavailable_device_is_one_line_exit_2_before_anything_runs(tmp_path, capsys):
    from tiny import steered

    src, recipe = steered(tmp_path)
    capsys.readouterr()
    for argv in (["generate", str(src), "hi", "--device", "cuda"], ["apply", str(recipe), "--device", "cuda:0"],
                 ["eval", str(recipe), "--device", "tpu"], ["learn", "steer", "--model", str(src), "--positive", "x",
                                                              "--negative", "y", "--layers", "1", "--out", str(tmp_path / "l.pt"),
                                                              "--device", "cuda"]):
        assert main([*argv, "-q"]) == 2, argv
        err = capsys.readouterr().err
        assert "--device" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "l.pt").exists()


def test_device_cpu_runs_the_same_path_and_reports_it(tmp_path, capsys):
    from tiny import steered

    src, recipe = steered(tmp_path)
    out = {}
    for dev in (None, "cpu"):
        args = ["generate", str(recipe), "hello world", "--max-new-tokens", "6", "--json", "-q"]
        assert main(args + (["--device", dev] if dev else [])) == 0
        out[dev] = [r["tokens"] for r in json.loads(capsys.readouterr().out)["replies"]]
    assert out[None] == out["cpu"]
    rep = json.loads((tmp_path / "baked" / "bake_report.json").read_text())
    assert rep["verification"]["device"] == "cpu"
    assert "float64 compute on cpu" in main_text(["verify", str(tmp_path / "baked"), "--device", "cpu"], capsys)


def main_text(argv, capsys) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


# -- on a GPU: the same results as on the CPU ------------------------------------------------------


@cuda
def test_learning_on_cuda_gives_the_cpu_alphas_and_directions(tmp_path):
    """float64 responses: AURA's alphas and a steering direction equal the CPU's within 1e-6."""
    from bake import api
    from tiny import add_tokenizer, build

    src = add_tokenizer(build("llama", tmp_path / "m"))
    (tmp_path / "tox.jsonl").write_text("".join(json.dumps({"text": f"text {i} " * (i % 5 + 1), "label": i % 2}) + "\n"
                                                for i in range(24)))
    (tmp_path / "pos.txt").write_text("\n".join(f"good thing {i}" for i in range(8)))
    (tmp_path / "neg.txt").write_text("\n".join(f"bad thing {i}" for i in range(8)))
    got = {}
    for dev in ("cpu", "cuda"):
        with device.using(dev):
            api.learn("aura", model=str(src), data=str(tmp_path / "tox.jsonl"), out=str(tmp_path / f"a-{dev}.safetensors"),
                      progress=False)
            api.learn("steer", model=str(src), positive=str(tmp_path / "pos.txt"), negative=str(tmp_path / "neg.txt"),
                      layers="1", out=str(tmp_path / f"v-{dev}.safetensors"), progress=False)
        from safetensors.torch import load_file

        got[dev] = {**load_file(tmp_path / f"a-{dev}.safetensors"), **load_file(tmp_path / f"v-{dev}.safetensors")}
    assert got["cpu"].keys() == got["cuda"].keys() and got["cpu"]
    for k in got["cpu"]:
        assert torch.allclose(got["cpu"][k].double(), got["cuda"][k].double(), atol=1e-6), k


@cuda
def test_verification_and_eval_on_cuda_agree_with_the_cpu(tmp_path):
    import bake
    from bake import api
    from tiny import steered

    src, recipe = steered(tmp_path)
    res = {}
    for dev in ("cpu", "cuda"):
        with device.using(dev):
            v = bake.verify(tmp_path / "baked", progress=False)["verification"]
            e = api.evaluate(recipe, suites="quality", out=tmp_path / f"ev-{dev}", progress=False,
                             options={"limit": 4, "kl_tokens": 4, "batch_size": 4})
        res[dev] = (v, e)
    assert res["cuda"][0]["status"] == "passed" and res["cuda"][0]["device"].startswith("cuda")
    assert res["cpu"][0]["metrics"]["max_abs_logit"] <= res["cpu"][0]["tolerance"]["max_abs_logit"]
    # the evaluation's figures (float32 forward passes) on both devices, item by item
    cpu, gpu = (floats(r[1]["models"]["baked"]["quality"]["vs base"]) for r in (res["cpu"], res["cuda"]))
    assert cpu.keys() == gpu.keys() and cpu
    for k in cpu:
        assert cpu[k] == pytest.approx(gpu[k], rel=1e-3, abs=1e-4), k


def floats(d, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(floats(v, f"{prefix}{k}."))
        elif isinstance(v, float):
            out[prefix + k] = v
    return out


def test_max_memory_budgets_parse_and_refuse_what_is_not_a_device():
    assert device.parse_budget("8GiB") == {"cpu": 8 << 30}
    assert device.parse_budget("cpu=1GB, mps=2GB") == {"cpu": 10**9, "mps": 2 * 10**9}
    for bad, message in (("gpu=1GB", "not a device"), ("cpu=lots", "give a size"), (",", "give budgets")):
        with pytest.raises(BakeError, match=message):
            device.parse_budget(bad)


def test_eval_and_tune_on_a_model_spread_over_cpu_and_disk_give_the_in_memory_figures(tmp_path, capsys):
    """A budget smaller than the model (a tiny llama of about 100 kB, 60 kB of CPU memory): accelerate
    keeps what fits on the CPU and the rest on disk, and `bake eval` and `bake tune` measure the same
    figures as with the model whole in memory."""
    import yaml

    from tiny import steered

    src, recipe = steered(tmp_path)
    size = sum(f.stat().st_size for f in src.glob("*.safetensors"))
    assert size > 60_000
    from bake.model.loading import load_model

    with device.using(None, "cpu=60KB"):
        placed = load_model(src, trust_remote_code=False).hf_device_map
    assert "disk" in placed.values() and "cpu" in placed.values(), placed
    opts = ["--suite", "quality", "--limit", "4", "--json", "-q"]
    runs = {}
    for name, extra in (("memory", []), ("budget", ["--max-memory", "cpu=60KB"])):
        assert main(["eval", str(recipe), "--hooks", "--out", str(tmp_path / f"ev-{name}"), *opts, *extra]) == 0
        runs[name] = json.loads(capsys.readouterr().out)["models"]
    assert runs["memory"] == runs["budget"]  # every figure, and the examples
    data = yaml.safe_load(recipe.read_text())
    data["tune"] = {"params": {"interventions[0].scale": {"low": -3, "high": 3}}, "objectives": ["kl"], "trials": 2,
                    "startup": 2, "limit": 4, "eval": {"kl_tokens": 4}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    fronts = {}
    for name, extra in (("memory", []), ("budget", ["--max-memory", "cpu=60KB"])):
        assert main(["tune", str(tmp_path / "t.yaml"), "--study-dir", str(tmp_path / f"study-{name}"), "--json", "-q",
                     *extra]) == 0
        fronts[name] = [(t["values"], t["metrics"]) for t in json.loads(capsys.readouterr().out)["all"]]
    assert fronts["memory"] == fronts["budget"] and len(fronts["memory"]) == 2
    assert all(v and m.get("kl") is not None for v, m in fronts["memory"])


def test_a_recipes_device_is_used_unless_the_command_line_chooses(tmp_path, capsys):
    import yaml

    import bake
    from bake.errors import RecipeError
    from tiny import steered

    src, recipe = steered(tmp_path)
    data = yaml.safe_load(recipe.read_text())
    with pytest.raises(RecipeError, match="device"):
        bake.load_recipe(_write(tmp_path / "bad.yaml", {**data, "device": "gpu"}))
    cpu = _write(tmp_path / "cpu.yaml", {**data, "device": "cpu"})
    assert bake.apply(cpu, output=tmp_path / "o1", progress=False)["verification"]["device"] == "cpu"
    if torch.cuda.is_available():
        return
    gone = _write(tmp_path / "cuda.yaml", {**data, "device": "cuda"})
    capsys.readouterr()
    assert main(["apply", str(gone), "--out", str(tmp_path / "o2"), "-q"]) == 2  # one line, nothing written
    err = capsys.readouterr().err
    assert "the recipe's device: torch" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o2").exists()
    assert main(["apply", str(gone), "--out", str(tmp_path / "o3"), "--device", "cpu", "-q"]) == 0  # the CLI wins


def _write(path, data):
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path
