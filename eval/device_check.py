"""The device check (issue 30): every forward pass of bake on a GPU, against the CPU.

    python eval/device_check.py                          # on a CUDA machine: writes eval/device_check.json
    python eval/device_check.py --device cpu --size tiny # the same code path on the CPU, in seconds

1. Equality: on a small synthetic Llama (random weights, built here), `bake learn aura`, `steer` and
   `refusal` on the CPU and on the device: alphas and directions within 1e-6 (float64 responses);
   a steering bake verified on both, the verification figures within its tolerance.
2. Scale: on a synthetic Llama of about 1B parameters (`--size 1b`, built in memory from random
   weights, no download) on the device: the three learners (tokens/s of AURA's learning pass against
   a bare batched forward over the same texts), one `bake eval` quality run, five `bake tune` trials
   (seconds per trial), one bake with its verification; peak GPU memory.

It needs only what bake needs (torch, transformers, accelerate, safetensors, numpy, scipy, pyyaml,
pydantic, tokenizers) plus optuna, sqlalchemy, alembic and colorlog for the tuning trials (carry
their wheels to a machine without them). The data are the project's own small files (recipes/data/).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

import torch  # noqa: E402
import yaml  # noqa: E402

DATA = ROOT / "recipes" / "data"
SIZES = {"tiny": (64, 4, 128, 512), "small": (256, 6, 512, 2048), "1b": (2048, 16, 5632, 32000)}
CORPUS_FILES = ("toxicity-sample.jsonl", "joy.txt", "gloom.txt", "harmful.json", "harmless.json", "open-prompts.txt")
CHAT = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant> {% endif %}")


def model_folder(dest: Path, size: str, seed: int = 0) -> Path:
    """A synthetic Llama with a word-piece tokenizer trained on the project's data files."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from synthetic import write_llama

    hidden, layers, inter, vocab = SIZES[size]
    write_llama(dest, hidden, layers, inter, vocab, shard_mb=2048, dtype=torch.float32, seed=seed)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    texts = [line for f in CORPUS_FILES for line in (DATA / f).read_text(encoding="utf-8").splitlines()]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=min(vocab, 4000),
                                                       special_tokens=["<pad>", "<unk>", "<eos>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    fast.chat_template = CHAT
    fast.save_pretrained(dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    (dest / "config.json").write_text(json.dumps(cfg, indent=1))
    return dest


def learn_all(model: Path, out: Path, tag: str) -> dict:
    """The three learners; {artifact: seconds}."""
    from bake import api

    runs = {
        "aura": dict(data=str(DATA / "toxicity-sample.jsonl"), modules=("model.layers.*.mlp.up_proj",)),
        "steer": dict(positive=str(DATA / "joy.txt"), negative=str(DATA / "gloom.txt"), layers="1"),
        "refusal": dict(harmful=str(DATA / "harmful.json"), harmless=str(DATA / "harmless.json"), kl_max=10.0),
    }
    seconds = {}
    for what, opts in runs.items():
        t = time.perf_counter()
        api.learn(what, model=str(model), out=str(out / f"{what}-{tag}.safetensors"), progress=False, force=True, **opts)
        seconds[what] = round(time.perf_counter() - t, 2)
    return seconds


def max_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys(), (a, b)
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x if x[k].is_floating_point())


def steer_recipe(folder: Path, model: Path, vector: Path, tune: bool = False) -> Path:
    recipe = {"model": str(model), "output": str(folder / "baked"),
              "interventions": [{"kind": "steer", "layers": [1], "vector": f"{vector}#vector", "scale": 2.0}]}
    if tune:
        recipe["tune"] = {"params": {"interventions[0].scale": {"low": -4, "high": 4}}, "objectives": ["kl"],
                          "trials": 5, "startup": 3, "limit": 8, "eval": {"kl_tokens": 8}}
    path = folder / ("tune.yaml" if tune else "recipe.yaml")
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def verify(recipe: Path, out: Path) -> dict:
    import bake

    v = bake.apply(recipe, output=out, force=True, progress=False)["verification"]
    return {"status": v["status"], "device": v["device"], "max_abs_logit": v["metrics"]["max_abs_logit"],
            "tolerance": v["tolerance"]["max_abs_logit"], "top1": v["metrics"]["top1_agreement"]}


def equality(work: Path, dev: str) -> dict:
    """CPU against `dev` on the small model."""
    from bake.model.device import using

    model = model_folder(work / "small", "small")
    out = {}
    for where in ("cpu", dev):
        with using(where):
            out[f"learn seconds ({where})"] = learn_all(model, work, where.replace(":", ""))
    tag = dev.replace(":", "")
    out["max abs difference"] = {w: max_diff(work / f"{w}-cpu.safetensors", work / f"{w}-{tag}.safetensors")
                                 for w in ("aura", "steer", "refusal")}
    out["within 1e-6"] = all(v <= 1e-6 for v in out["max abs difference"].values())
    for where in ("cpu", dev):
        with using(where):
            out[f"verification ({where})"] = verify(steer_recipe(work, model, work / "steer-cpu.safetensors"),
                                                    work / f"baked-{where.replace(':', '')}")
    return out


def bare_forward_tokens_per_s(model_dir: Path, texts: list[str], batch_size: int = 32) -> float:
    from bake.learn.collect import Runner

    runner = Runner(model_dir)
    runner.model.to(torch.float64)
    tokens, t = 0, time.perf_counter()
    with torch.no_grad():
        for enc in runner.batches(texts, batch_size, 128, "bare", False):
            runner.forward(enc)
            tokens += int(enc["attention_mask"].sum())
    sync()
    return tokens / (time.perf_counter() - t)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def scale(work: Path, dev: str, size: str) -> dict:
    from bake import api
    from bake.evaluation.run import evaluate
    from bake.evaluation.suites import Options
    from bake.learn.data import load
    from bake.model.device import using

    t = time.perf_counter()
    model = model_folder(work / size, size)
    out = {"model": {"size": size, "parameters": sum(torch.Size(s).numel() for s in _shapes(size).values()),
                     "build seconds": round(time.perf_counter() - t, 1)}}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    texts = load(DATA / "toxicity-sample.jsonl").texts
    with using(dev):
        out["learn seconds"] = learn_all(model, work, "scale")
        bare = bare_forward_tokens_per_s(model, texts)
        t = time.perf_counter()
        api.learn("aura", model=str(model), data=str(DATA / "toxicity-sample.jsonl"), out=str(work / "aura-again.safetensors"),
                  progress=False, force=True)
        sync()
        from bake.learn.collect import Runner

        tok = Runner(model).tok  # tokens the learning pass read (texts cut at 128 tokens, as it does)
        n_tok = sum(min(len(tok(x)["input_ids"]), 128) for x in texts)
        learn_s = time.perf_counter() - t
        out["aura learning"] = {"texts": len(texts), "tokens": n_tok, "seconds (incl. loading)": round(learn_s, 2),
                                "tokens per s": round(n_tok / learn_s, 1), "bare batched forward tokens per s": round(bare, 1),
                                "ratio (bare / learning)": round(bare / (n_tok / learn_s), 2)}
        recipe = steer_recipe(work, model, work / "steer-scale.safetensors")
        t = time.perf_counter()
        rep = evaluate(str(recipe), None, "quality", Options(limit=16, kl_tokens=16, progress=False), hooks=True)
        out["eval quality (16 items, hooks)"] = {"seconds": round(time.perf_counter() - t, 1),
                                                 "headline": rep["models"]["hooked"]["quality"].get("headline")}
        t = time.perf_counter()
        trec = steer_recipe(work, model, work / "steer-scale.safetensors", tune=True)
        tuned = api.tune(trec, study_dir=work / "study", progress=False)
        out["tune (5 trials)"] = {"seconds": round(time.perf_counter() - t, 1),
                                  "seconds per trial": (tuned["cost"] or {}).get("seconds per trial"), "front": tuned["front"]}
        t = time.perf_counter()
        out["bake + verification"] = {**verify(recipe, work / "baked-scale"), "seconds": round(time.perf_counter() - t, 1)}
    if torch.cuda.is_available():
        out["peak GPU memory GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _shapes(size: str) -> dict:
    from synthetic import shapes

    return shapes(*SIZES[size])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="the device checked against the CPU (default cuda)")
    ap.add_argument("--size", default="1b", choices=list(SIZES), help="the model of the scale part")
    ap.add_argument("--out", default=str(ROOT / "eval" / "device_check.json"))
    args = ap.parse_args()
    from bake.model.device import describe, resolve

    dev = resolve(args.device)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bake-device-check-") as tmp:
        work = Path(tmp)
        res = {"device": describe(dev), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
               "command": "python eval/device_check.py " + " ".join(sys.argv[1:])}
        res["equality (small model, cpu vs device)"] = equality(work, str(dev))
        print(json.dumps(res, indent=1), flush=True)
        res["scale"] = scale(work, str(dev), args.size)
    res["seconds"] = round(time.time() - started, 1)
    Path(args.out).write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(json.dumps(res, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
