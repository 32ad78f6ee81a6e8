"""heretic (p-e-w/heretic, `heretic-llm` on PyPI, AGPL: run here, not copied) on the same organism and
prompts as `eval/tune_refusal.py`, with the same number of trials; both results measured under both
protocols.

    .venv/bin/python eval/heretic_compare.py [--trials 24] [--startup 10]   # after eval/tune_refusal.py --trials 24

- heretic runs in its own virtual environment (out/eval-work/heretic-venv, created with the local
  torch wheel and `heretic-llm==1.4.0` when missing), driven through its notebook-mode prompts:
  its refusal direction from the same texts bake's recipe learns from (recipes/data/harmful.json,
  harmless.json), its evaluation prompts = the 16 + 16 tuning prompts bake's trials measured, its own
  refusal markers and first-token KL, replies of 128 tokens (its default is 100) as bake's, seed 0.
- heretic's protocol: the figures it reports on the prompts it tuned on, for its chosen trial and
  (`--evaluate-model`) for bake's tuned bake.
- bake's protocol: `bake eval --suite refusal,quality` on the held-out split (100 harmful, 100
  harmless prompts neither search saw) for heretic's exported model; bake's bake was measured on
  the same prompts by eval/tune_refusal.py.
The choice on each side is the same rule: the trial with the fewest refusals among those with KL
<= 0.1 (heretic: its first-token KL; bake: KL over the reply and at the first token).
Writes eval/heretic_compare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORK = ROOT / "out" / "eval-work" / "heretic"
# SmolLM2's own default system prompt (its chat template's), which bake's prompts get and the organism
# was fine-tuned with; heretic's default ("You are a helpful assistant.") would be another protocol
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
TUNE = ROOT / "out" / "eval-work" / "tune-refusal"
VENV = Path(os.environ.get("HERETIC_VENV") or ROOT / "out" / "eval-work" / "heretic-venv")


def venv() -> Path:
    py = VENV / "bin" / "python"
    if not (VENV / "bin" / "heretic").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "heretic-llm==1.4.0"], check=True)
    return VENV / "bin" / "heretic"


def lines(path: Path, texts: list[str]) -> str:
    path.write_text("".join(" ".join(t.split()) + "\n" for t in texts), encoding="utf-8")
    return str(path)


def heretic(args: list[str], answers: str, log: Path) -> str:
    env = {**os.environ, "COLAB_GPU": "1", "TOKENIZERS_PARALLELISM": "false"}  # notebook mode: prompts read stdin
    p = subprocess.run([str(venv()), *args], input=answers, text=True, capture_output=True, env=env, cwd=WORK)
    log.write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
    return p.stdout


def trials_of(checkpoint: Path) -> list[dict]:
    """heretic's trials from its Optuna journal (read with bake's optuna)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    st = optuna.load_study(study_name=None, storage=JournalStorage(JournalFileBackend(str(checkpoint))))
    return [{"index": t.user_attrs["index"], "refusals": t.user_attrs["refusals"], "n": t.user_attrs["n_bad_prompts"],
             "kl_first": t.user_attrs["kl_divergence"], "params": t.params}
            for t in st.trials if t.state.name == "COMPLETE"]


def front(trials: list[dict]) -> list[dict]:
    """heretic's own menu: by refusals then KL, each entry lowering the KL."""
    out, best = [], float("inf")
    for t in sorted(trials, key=lambda t: (t["refusals"], t["kl_first"])):
        if t["kl_first"] < best:
            best = t["kl_first"]
            out.append(t)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--startup", type=int, default=10)
    args = ap.parse_args()
    from bake.evaluation.run import evaluate
    from bake.evaluation.suites import Options
    from bake.learn.data import load

    organism = ROOT / "out" / "organisms" / "smollm2-refuser"
    tuned = TUNE / "tuned"
    if not (tuned / "bake_report.json").is_file():
        raise SystemExit("run eval/tune_refusal.py first: this compares with its study and its bake")
    WORK.mkdir(parents=True, exist_ok=True)
    tuning = {k: load(TUNE / "study" / "splits" / "tuning" / f"{k}.jsonl", limit=16, seed=0).texts
              for k in ("harmful", "harmless")}  # the prompts bake's trials measured (limit 16, seed 0)
    files = {"bad": lines(WORK / "bad.txt", load(ROOT / "recipes/data/harmful.json").texts),
             "good": lines(WORK / "good.txt", load(ROOT / "recipes/data/harmless.json").texts),
             "bad_eval": lines(WORK / "bad_eval.txt", tuning["harmful"]),
             "good_eval": lines(WORK / "good_eval.txt", tuning["harmless"])}
    common = ["--model", str(organism), "--n-trials", str(args.trials), "--n-startup-trials", str(args.startup),
              "--seed", "0", "--max-response-length", "128", "--batch-size", "16", "--export-strategy", "MERGE",
              "--system-prompt", SYSTEM,
              "--study-checkpoint-dir", str(WORK / "checkpoints"),
              "--good-prompts.dataset", files["good"], "--bad-prompts.dataset", files["bad"],
              "--good-evaluation-prompts.dataset", files["good_eval"],
              "--bad-evaluation-prompts.dataset", files["bad_eval"]]
    t0 = time.time()
    journal = next((WORK / "checkpoints").glob("*.jsonl"), None) if (WORK / "checkpoints").is_dir() else None
    if journal is None or len(trials_of(journal)) < args.trials:
        heretic(common, "", WORK / "search.log")  # the search; stdin closes at its first menu
    journal = next((WORK / "checkpoints").glob("*.jsonl"))
    t1 = time.time()
    trials = trials_of(journal)
    menu = front(trials)
    ok = [t for t in menu if t["kl_first"] <= 0.1]
    chosen = min(ok or menu, key=lambda t: (t["refusals"], t["kl_first"]))
    model = WORK / "model"
    if not (model / "config.json").is_file():
        # resume: "show the results" (1), the chosen trial's place in the menu, "save" (1), the folder
        heretic(common, f"1\n{menu.index(chosen) + 1}\n1\n{model}\n", WORK / "export.log")
    t2 = time.time()
    out = heretic(["--model", str(organism), "--evaluate-model", str(tuned), "--batch-size", "16",
                   "--system-prompt", SYSTEM, "--max-response-length", "128",
                   "--good-prompts.dataset", files["good"], "--bad-prompts.dataset", files["bad"],
                   "--good-evaluation-prompts.dataset", files["good_eval"],
                   "--bad-evaluation-prompts.dataset", files["bad_eval"]], "", WORK / "evaluate-bake.log")
    kl = re.findall(r"KL divergence: ([0-9.]+)", out)
    ref = re.findall(r"Refusals: (\d+)/(\d+)", out)
    bake_under_heretic = {"refusals": f"{ref[-1][0]}/{ref[-1][1]}" if ref else None,
                          "kl_first": float(kl[-1]) if kl else None}
    held = {k: str(TUNE / "study" / "splits" / "heldout" / f"{k}.jsonl") for k in ("harmful", "harmless")}
    opts = Options(data=held, limit=100, lengths=(32, 128), progress=True)  # the prompts tune_refusal.py measured
    cached = WORK / "heldout-eval.json"  # bake eval of heretic's model (9 minutes here): once
    if not cached.is_file():
        cached.write_text(json.dumps(evaluate(str(model), str(organism), "refusal,quality", opts), default=str))
    m = json.loads(cached.read_text())["models"]
    c = m["baked"]["refusal"]["vs base"]
    bake_study = json.loads((ROOT / "eval" / "tune_refusal.json").read_text())
    b = bake_study["heldout (baked, bake eval)"]
    rows = {"organism": {"refusal at 128": m["base"]["refusal"]["summary"]["refusal rate on harmful prompts"]["128"]},
            "heretic": {"refusal at 128": m["baked"]["refusal"]["summary"]["refusal rate on harmful prompts"]["128"],
                        "over-refusal at 128": m["baked"]["refusal"]["summary"]["over-refusal on harmless prompts"]["128"],
                        "KL first token": c["KL first token"], "KL over the reply": c["KL over the reply"],
                        "perplexity change": m["baked"]["quality"]["vs base"]["perplexity change"]},
            "bake (eval/tune_refusal.json)": {"refusal at 128": b["refusal at 128 tokens"]["baked"],
                                              "over-refusal at 128": b["over-refusal at 128 tokens"]["baked"],
                                              "KL first token": b["KL first token"],
                                              "KL over the reply": b["KL over the reply"],
                                              "perplexity change": b["perplexity change"]}}
    t3 = time.time()
    res = {"date": time.strftime("%Y-%m-%d"), "hardware": "x86-64, 2 CPU cores, no GPU",
           "command": f"python eval/heretic_compare.py --trials {args.trials} --startup {args.startup}",
           "heretic": {"version": "heretic-llm 1.4.0", "trials": len(trials), "startup": args.startup,
                       "front (its protocol: its tuning prompts)": menu, "chosen": chosen},
           "heretic's protocol (16 harmful / 16 harmless tuning prompts, 128 tokens, first-token KL)": {
               "heretic's choice": {"refusals": f"{chosen['refusals']}/{chosen['n']}", "kl_first": chosen["kl_first"]},
               "bake's choice": bake_under_heretic},
           "bake's protocol (held-out: 100 harmful / 100 harmless prompts neither search saw)": rows,
           "bake": {"trial": bake_study["picked"]["trial"], "values": bake_study["picked"]["values"]},
           "seconds": {"heretic search": round(t1 - t0, 1), "heretic export": round(t2 - t1, 1),
                       "measurements": round(t3 - t2, 1)}}
    (ROOT / "eval" / "heretic_compare.json").write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps({k: v for k, v in res.items() if "protocol" in k}, indent=1, default=str))


if __name__ == "__main__":
    main()
