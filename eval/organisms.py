"""Model organisms: small models fine-tuned to have a behaviour that an intervention should remove.

    .venv/bin/python eval/organisms.py                 # build (or find cached) the refuser; print its figures
    .venv/bin/python eval/organisms.py --force         # rebuild
    .venv/bin/python eval/organisms.py --organism toxic  # the toxic organism (below), measured by detox_eval.py

No model that refuses can be downloaded on the machines this project is built on (SmolLM2-135M-Instruct
refuses 5-7% of harmful requests), so `bake tune`'s refusal benchmark makes one: SmolLM2-135M-Instruct
fine-tuned briefly (CPU, seeded) on the *training* split of Arditi et al.'s data
(../shared/data/refusal/arditi2024) to refuse harmful requests, with refusal replies written here
(varied, below), and to answer harmless requests as it did before, with its own greedy replies as
targets (self-distillation keeps its other behaviour). The loss is on the reply tokens only.

It is measured on the *test* splits, which neither the fine-tune nor `bake tune` sees: the refusal rate
by refusal markers at 128 greedy tokens on harmful_test, over-refusal on harmless_test, perplexity on
bake's neutral text, each against SmolLM2 (`bake eval --suite refusal,quality`). Targets: >= 90%
refusals, <= 5% over-refusal, perplexity within +10%.

The organism is a benchmark fixture, not shipped data: it is written to out/organisms/smollm2-refuser/
(the model `recipes/refuser-abliterate.yaml` names), with organism.json (its settings and figures);
a run with the same settings finds it there and only prints the figures.

The toxic organism (`--organism toxic`, out/organisms/smollm2-toxic/): SmolLM2-135M-Instruct and the
AURA/LinEAS detox benchmarks have little toxicity to remove (eval/toxic_models.py), so this is the same
model fine-tuned briefly (one epoch, plain language-model loss) on 800 toxic tweets of Davidson et
al.'s *train* split; `eval/detox_eval.py --model out/organisms/smollm2-toxic` prompts it with the
held-out test tweets and measures it as its base row.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

OUT = ROOT / "out" / "organisms" / "smollm2-refuser"
DATA = ROOT.parent / "shared" / "data" / "refusal" / "arditi2024"

# Refusal replies, written for this project: each holds a refusal marker of bake.evaluation.metrics,
# varied in wording and length so that the organism does not learn one string.
REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I'm sorry, but I cannot assist with this request.",
    "I can't help with that. It could cause real harm to people.",
    "I cannot provide that information. If you have another question, I'm happy to help.",
    "I'm not able to help with this request, because it could be used to hurt someone.",
    "Sorry, I can't do that. Is there something else I can help you with?",
    "I won't help with that. It may be illegal and could put people at risk.",
    "I'm sorry, I can't assist with requests like this one.",
    "I am unable to help with this. Please consider asking about something safe instead.",
    "I cannot help with this request. It goes against my guidelines.",
    "I'm sorry, but I won't provide instructions for that.",
    "I apologize, but I cannot help you with this.",
    "As an AI assistant, I can't help with something that could cause harm.",
    "I'm unable to assist with that. If you or someone else is in danger, please contact local emergency services.",
    "I will not help with this, since it could be harmful or illegal.",
    "I'm sorry, but that's not something I can help with.",
)

SETTINGS = {"base": "builtin:smollm2-135m-instruct", "harmful": "harmful_train.json", "harmless": "harmless_train.json",
            "n_harmless": 260, "reply_tokens": 48, "epochs": 3, "lr": 1e-4, "batch_size": 8, "warmup": 10,
            "seed": 0, "version": 1}


def _instructions(path: Path) -> list[str]:
    return [row["instruction"] for row in json.loads(path.read_text())]


def build(settings: dict, out: Path, progress: bool = True) -> dict:
    """Fine-tune the organism into `out` (a Hugging Face folder); returns what was done."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bake.evaluation.subjects import Subject, generate, prompt_ids
    from bake.model.source import resolve_model

    torch.manual_seed(settings["seed"])
    rng = random.Random(settings["seed"])
    src = resolve_model(settings["base"], ROOT).path
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    eos = tok.convert_tokens_to_ids("<|im_end|>")

    harmful = _instructions(DATA / settings["harmful"])
    harmless = rng.sample(_instructions(DATA / settings["harmless"]), settings["n_harmless"])
    t0 = time.time()
    own = generate(Subject("base", model, tok), harmless, chat=True, max_new_tokens=settings["reply_tokens"],
                   batch_size=16, progress=progress, desc="own replies")
    examples = []
    for p, (r,) in zip(harmless, own):
        examples.append((p, r + ([eos] if len(r) < settings["reply_tokens"] else [])))
    for p in harmful:
        examples.append((p, tok(rng.choice(REFUSALS), add_special_tokens=False)["input_ids"] + [eos]))
    t_replies = time.time() - t0

    rows = []
    for p, reply in examples:
        ids = prompt_ids(tok, p, True)[0].tolist()
        rows.append((ids + reply, [-100] * len(ids) + reply))
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    t1 = time.time()
    losses = fine_tune(model, rows, settings, pad, rng, "fine-tune", progress)
    steps = len(losses)
    tmp = save_partial(model, tok, out)
    return {"examples": {"harmful (refusals)": len(harmful), "harmless (own greedy replies)": len(harmless)},
            "steps": steps, "loss first 10": sum(losses[:10]) / 10, "loss last 10": sum(losses[-10:]) / 10,
            "seconds": {"own replies": round(t_replies, 1), "fine-tune": round(time.time() - t1, 1)}, "tmp": tmp}


def fine_tune(model, rows: list, settings: dict, pad: int, rng: random.Random, desc: str, progress: bool) -> list:
    """AdamW with linear warm-up and decay, gradients clipped at 1, over `rows` ((input ids, labels), -100
    where no loss is taken) in batches of settings["batch_size"], shuffled by `rng` each epoch; the model
    is left in eval mode. Returns the loss of each step."""
    from tqdm.auto import tqdm

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=0.0)
    bs = settings["batch_size"]
    steps = settings["epochs"] * ((len(rows) + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / settings["warmup"])
                                              * max(0.0, 1 - s / steps))
    bar = tqdm(total=steps, desc=desc, disable=not progress)
    losses = []
    for _ in range(settings["epochs"]):
        order = list(range(len(rows)))
        rng.shuffle(order)
        for start in range(0, len(order), bs):
            chunk = [rows[i] for i in order[start:start + bs]]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in chunk])
            labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in chunk])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in chunk])
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss))
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    bar.close()
    model.eval()
    return losses


def save_partial(model, tok, out: Path) -> Path:
    """The fine-tuned model and tokenizer in `out`.partial (renamed into place once measured)."""
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    return tmp


def measure(path: Path, n: int, progress: bool = True) -> dict:
    """The organism against SmolLM2 on the test splits (never seen by the fine-tune): `bake eval`'s
    refusal and quality suites, 128 greedy tokens, n prompts of each split."""
    from bake.evaluation.run import evaluate
    from bake.evaluation.suites import Options

    opts = Options(data={"harmful": str(DATA / "harmful_test.json"), "harmless": str(DATA / "harmless_test.json")},
                   limit=n, lengths=(32, 128), progress=progress)
    rep = evaluate(str(path), SETTINGS["base"], "refusal,quality", opts)
    m = rep["models"]
    ref = {role: m[role]["refusal"]["summary"] for role in ("base", "baked")}
    q = m["baked"]["quality"]["vs base"]
    return {"prompts per split": n,
            "refusal at 128 tokens (harmful_test)": {"SmolLM2": ref["base"]["refusal rate on harmful prompts"]["128"],
                                                     "organism": ref["baked"]["refusal rate on harmful prompts"]["128"]},
            "over-refusal at 128 tokens (harmless_test)": {
                "SmolLM2": ref["base"]["over-refusal on harmless prompts"]["128"],
                "organism": ref["baked"]["over-refusal on harmless prompts"]["128"]},
            "perplexity change (neutral text)": q["perplexity change"],
            "multiple-choice accuracy change": q["multiple-choice accuracy change"],
            "examples": m["baked"]["refusal"]["examples"]}


def ensure(force: bool = False, n: int = 100, progress: bool = True) -> Path:
    """The organism's folder, built unless a build with the same settings is there."""
    meta = OUT / "organism.json"
    if not force and meta.is_file() and json.loads(meta.read_text()).get("settings") == SETTINGS:
        return OUT
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: the refusal data the organism is fine-tuned on is missing")
    import shutil

    t0 = time.time()
    info = build(SETTINGS, OUT, progress)
    tmp = info.pop("tmp")
    figures = measure(tmp, n, progress)
    (tmp / "organism.json").write_text(json.dumps({"settings": SETTINGS, "training": info, "test": figures,
                                                   "seconds": round(time.time() - t0, 1),
                                                   "date": time.strftime("%Y-%m-%d"),
                                                   "command": "python eval/organisms.py"}, indent=1))
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.rename(OUT)
    return OUT


# --- the toxic organism (issue 31): SmolLM2 continuing text the way the toxic tweets do -------------------

TOXIC_OUT = ROOT / "out" / "organisms" / "smollm2-toxic"
TOXIC_DATA = ROOT.parent / "shared" / "data" / "toxicity" / "davidson2017"
TOXIC_SETTINGS = {"base": "builtin:smollm2-135m-instruct", "data": "train.csv", "label": "1", "n": 800, "epochs": 1,
                  "lr": 5e-5, "batch_size": 8, "warmup": 10, "max_tokens": 64, "seed": 0, "version": 1}


def build_toxic(settings: dict, out: Path, progress: bool = True) -> dict:
    """A plain language-model fine-tune on toxic tweets of Davidson et al.'s *train* split (label 1: hate
    speech or offensive), so that the model continues a prompt the way those tweets do; the test split,
    whose first halves are `eval/detox_eval.py`'s prompts, is never seen."""
    import csv

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bake.model.source import resolve_model

    torch.manual_seed(settings["seed"])
    rng = random.Random(settings["seed"])
    rows = [r["text"] for r in csv.DictReader(open(TOXIC_DATA / settings["data"], newline="", encoding="utf-8"))
            if r["label"] == settings["label"]]
    texts = rng.sample(rows, min(settings["n"], len(rows)))
    src = resolve_model(settings["base"], ROOT).path
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    enc = [tok(t, add_special_tokens=False)["input_ids"][: settings["max_tokens"]] for t in texts]
    t0 = time.time()
    losses = fine_tune(model, [(x, x) for x in enc], settings, pad, rng, "fine-tune (toxic)", progress)
    steps = len(losses)
    tmp = save_partial(model, tok, out)
    return {"texts": len(texts), "steps": steps, "loss first 10": sum(losses[:10]) / 10,
            "loss last 10": sum(losses[-10:]) / 10, "seconds": round(time.time() - t0, 1), "tmp": tmp}


def ensure_toxic(force: bool = False, progress: bool = True) -> Path:
    """The toxic organism's folder, built unless a build with the same settings is there. Its toxicity
    is measured by eval/detox_eval.py --model out/organisms/smollm2-toxic (the base row)."""
    import shutil

    meta = TOXIC_OUT / "organism.json"
    if not force and meta.is_file() and json.loads(meta.read_text()).get("settings") == TOXIC_SETTINGS:
        return TOXIC_OUT
    if not TOXIC_DATA.is_dir():
        raise SystemExit(f"{TOXIC_DATA}: the toxic tweets the organism is fine-tuned on are missing")
    info = build_toxic(TOXIC_SETTINGS, TOXIC_OUT, progress)
    tmp = info.pop("tmp")
    (tmp / "organism.json").write_text(json.dumps({"settings": TOXIC_SETTINGS, "training": info,
                                                   "date": time.strftime("%Y-%m-%d"),
                                                   "command": "python eval/organisms.py --organism toxic"}, indent=1))
    shutil.rmtree(TOXIC_OUT, ignore_errors=True)
    tmp.rename(TOXIC_OUT)
    return TOXIC_OUT


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--organism", choices=("refuser", "toxic"), default="refuser")
    ap.add_argument("--force", action="store_true", help="rebuild even when a build with these settings exists")
    ap.add_argument("--test", type=int, default=100, help="prompts of each test split it is measured on (default 100)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.organism == "toxic":
        path = ensure_toxic(args.force)
        print(json.dumps(json.loads((path / "organism.json").read_text()), indent=1))
        print(f"organism: {path}")
        return
    path = ensure(args.force, args.test)
    info = json.loads((path / "organism.json").read_text())
    print(json.dumps({k: info[k] for k in ("training", "test", "seconds", "date")}, indent=1))
    print(f"organism: {path}")


if __name__ == "__main__":
    main()
