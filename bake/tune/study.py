"""`bake tune`: an Optuna study over a recipe's `tune:` block.

Once per process: the recipe's learned artifacts (cached), the data split, the model loaded once and
measured without hooks on the tuning split (the base's replies and log-probabilities). Per trial:
the sampled values set into the recipe, the recipe planned as a bake (a trial that cannot bake
exactly is pruned with the reason, never scored), the plan's hooks put on the loaded model, and the
objective suites measured on the tuning split against the base. Nothing is baked or written but
the study's storage, its splits and its report. `pick` re-measures one trial on the held-out split
and writes the resolved recipe with both figures in its provenance.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BakeError, NotBakeable, RecipeError, first_line
from ..evaluation import sweep as sweep_mod
from ..evaluation.suites import Options, get
from ..files import staging
from ..recipe import schema
from .spec import Tune, parse_block, set_value
from .split import inputs_for, split

STUDY_DB = "study.db"
REPORT = "tune_report.json"
PLOT = "pareto.png"
MARKER_WHAT = "bake tune"


@dataclass
class Setup:
    """A recipe with its tune block, read and checked; where its study lives."""

    path: Path
    data: dict                  # the recipe as YAML data
    spec: Tune
    folder: Path                # the study's folder: splits, report, plot, default storage
    storage: str
    name: str
    data_files: dict = field(default_factory=dict)  # input -> source file
    shared: bool = False        # --storage given: other processes may work on the study at once

    @property
    def fingerprint(self) -> str:
        """What makes two runs the same study: the recipe without its trial count, and the data."""
        d = copy.deepcopy(self.data)
        d.get("tune", {}).pop("trials", None)
        blob = json.dumps([d, {k: staging.sha256_file(p) for k, p in sorted(self.data_files.items())}],
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _full_paths(data: dict, spec: Tune) -> Tune:
    """Short names (`scale`) resolved to full paths as --sweep resolves them."""
    params = {}
    for key, p in spec.params.items():
        path = key
        if "." not in key and "[" not in key:
            try:
                path = sweep_mod.resolve(data, key)
            except BakeError as e:
                raise RecipeError(f"tune.params.{key}: {str(e).replace('--sweep ', '')}") from None
        params[path] = p
    return spec.model_copy(update={"params": params})


def candidate(data: dict, values: dict) -> dict:
    """The recipe with `values` ({path: value}) set and without its tune block."""
    out = copy.deepcopy(data)
    out.pop("tune", None)
    for path, v in values.items():
        set_value(out, path, v)
    return out


def _bounds(s: Setup):
    """(path, value, recipe) for each end of each range and each choice, set alone into the recipe; a
    value the recipe's schema refuses (a bad path, a key the kind lacks) is an error naming the key."""
    base_dir = s.path.resolve().parent
    for path, p in s.spec.params.items():
        for v in p.bounds():
            try:
                yield path, v, schema.parse(candidate(s.data, {path: v}), str(s.path), base_dir)
            except RecipeError as e:
                lines = [x.strip() for x in str(e).splitlines()[1:]] or [str(e)]
                raise RecipeError(f"{s.path}: tune.params.{path} = {v!r}: " + "; ".join(lines)) from None


def check_params(s: Setup) -> None:
    """Every bound parses (before anything is loaded)."""
    for _ in _bounds(s):
        pass


def check_plans(s: Setup, trust: bool = False) -> None:
    """Every bound plans on the model (hooks only: whether it bakes exactly is the trial's question): a
    layer past the model's last or a candidate index out of range is an error naming the key before
    the search starts, not a study of pruned trials."""
    from ..planner import plan

    for path, v, r in _bounds(s):
        try:
            plan(r, progress=False, trust_remote_code=trust, hooks_only=True)
        except NotBakeable:
            pass
        except BakeError as e:
            raise BakeError(f"{s.path}: tune.params.{path} = {v!r}: {first_line(e)}") from None


def redact(url: str) -> str:
    """A storage URL without its password."""
    from ..files.redact import redact as hide

    return hide(url)


def setup(recipe: str | Path, out: str | Path | None = None, storage: str | None = None,
          study: str | None = None, data: dict | None = None) -> Setup:
    path = Path(recipe)
    r = schema.load(path)  # the recipe itself: every key validated as `bake apply` does
    raw = schema.load_yaml(path.read_text(encoding="utf-8"), str(path))
    spec = _full_paths(raw, parse_block(raw.get("tune"), str(path)))
    given = {k: r.path(v) for k, v in spec.data.items()}
    for k, v in (data or {}).items():
        from ..evaluation.suites import INPUTS

        if k not in INPUTS:
            raise BakeError(f"--data {k}: unknown input; known: {', '.join(INPUTS)}")
        given[k] = Path(v)
    files = inputs_for(spec.suites(), given)
    for k, f in files.items():
        if not f.is_file():
            raise BakeError(f"tune data {k}={f}: no such file")
    name = study or path.stem
    folder = staging.resolve_path(out or Path("out") / "tune" / name, "--out")
    s = Setup(path, raw, spec, folder, storage or f"sqlite:///{folder / STUDY_DB}", name, files, bool(storage))
    check_params(s)
    return s


def _storage(url: str):
    import optuna

    if url.startswith(("sqlite:", "postgresql", "mysql")):
        return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120,
                                          engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {})
    return url


def _retrying(make, tries: int = 6):
    """`make()`, again after a pause when another worker is creating the same new storage at that moment
    (its tables or its schema version: the loser of that race gets a database error, not the study)."""
    from sqlalchemy.exc import SQLAlchemyError

    for i in range(tries):
        try:
            return make()
        except SQLAlchemyError:
            if i == tries - 1:
                raise
            time.sleep(0.5 * (i + 1))


def _open(s: Setup, create: bool):
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the storage's heartbeat
    if not create and not s.shared and not (s.folder / STUDY_DB).is_file():
        raise BakeError(f"no study of {s.path} in {s.folder}; run `bake tune {s.path}` first (or give the "
                        "--study-dir / --storage it ran with)")
    if not create:
        try:
            return optuna.load_study(study_name=s.name, storage=_storage(s.storage))
        except KeyError:
            raise BakeError(f"no study {s.name!r} in {redact(s.storage)}; run `bake tune {s.path}` first") from None
    directions = [m.direction for m in s.spec.metrics]
    st = _retrying(lambda: optuna.create_study(study_name=s.name, storage=_storage(s.storage), directions=directions,
                                               load_if_exists=True))
    mine = st.user_attrs.get("fingerprint")
    if mine is None:
        st.set_user_attr("fingerprint", s.fingerprint)
        st.set_user_attr("objectives", s.spec.objectives)
    elif mine != s.fingerprint:
        raise BakeError(f"the study {s.name!r} in {redact(s.storage)} was made from another recipe or data; "
                        "give --study NAME (or --out) for a new one, or restore the recipe")
    return st


# --- measuring ------------------------------------------------------------------------------------

class Bench:
    """The model loaded once, the base measured once per split, hooks swapped per trial."""

    def __init__(self, s: Setup, splits: dict, part: str, progress: bool, trust: bool = False,
                 limit: int | None = None):
        from ..evaluation import run
        from ..evaluation.subjects import _load
        from ..planner import plan

        self.s, self.trust = s, trust
        self.suites = get(s.spec.suites())
        ev = {k: v for k, v in s.spec.eval.model_dump().items() if v is not None}
        lengths = s.spec.lengths() or Options().lengths
        self.opts = Options(data={k: e[part]["path"] for k, e in splits.items()}, seed=s.spec.seed,
                            limit=limit, lengths=lengths, progress=False, **ev)
        base_plan = plan(s.path, progress=progress, trust_remote_code=trust, hooks_only=True)  # learns, once
        if any(m.objective.name == "projection" for m in s.spec.metrics):
            self.opts.directions, _ = run.steer_directions(s.path, trust, progress)
        self.subject = _load(base_plan.checkpoint.path, "base", [], base_plan.checkpoint.spec, trust)
        t0 = time.time()
        self.base = run._measure(self.subject, self.suites, self.opts, None)
        self.base_seconds = time.time() - t0

    def plan(self, values: dict):
        """The plan of the recipe with `values` set; NotBakeable / BakeError when it cannot bake."""
        from ..planner import plan

        data = candidate(self.s.data, values)
        r = schema.parse(data, f"{self.s.path} (trial)", self.s.path.resolve().parent)
        return plan(r, progress=False, trust_remote_code=self.trust)

    def measure(self, hooks) -> tuple[dict, dict]:
        """(raw, comparison) per suite of the loaded model with `hooks`, against the base."""
        from ..evaluation import run

        self.subject.hooks, self.subject.role = list(hooks), "hooked"
        try:
            raw = run._measure(self.subject, self.suites, self.opts, self.base)
        finally:
            self.subject.hooks, self.subject.role = [], "base"
        return raw, {su.name: su.compare(self.base[su.name], raw[su.name], self.opts) for su in self.suites}

    def metrics(self, raw: dict, cmp: dict) -> dict:
        """{metric: value} for every objective and constraint."""
        measured = {su.name for su in self.suites}
        out = {}
        for m in [*self.s.spec.metrics, *(c.metric for c in self.s.spec.bounds)]:
            su = m.suite(measured)
            out[m.spec] = m.value(cmp[su], raw[su])
        return out


# --- the search -----------------------------------------------------------------------------------

def _finished(st) -> list:
    from optuna.trial import TrialState

    return st.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def search(s: Setup, trials: int | None = None, progress: bool = True, trust: bool = False) -> dict:
    """Run trials until the study holds `trials` finished ones (the tune block's `trials` by default);
    several processes on one storage share that count. Returns the report (also written)."""
    import optuna
    from tqdm.auto import tqdm

    target = trials or s.spec.trials
    check_plans(s, trust)
    staging.check_target(s.folder, folder=True, force=True, protect=[s.path, *s.data_files.values()],
                         refuse=_own_study, what="tune folder")
    s.folder.mkdir(parents=True, exist_ok=True)
    staging.write_marker(s.folder, MARKER_WHAT)
    splits = split(s.data_files, s.spec.holdout, s.spec.seed, s.folder / "splits")
    st = _open(s, create=True)
    done = len(_finished(st))
    if done < target:
        bench = Bench(s, splits, "tuning", progress, trust, s.spec.limit)
        # seeded; after the trials the study holds already, so a resumed run samples new points, and with a
        # shared storage also after the process id, so that workers started at once do not sample alike
        seed = int(np.random.SeedSequence([s.spec.seed, len(st.trials), os.getpid() if s.shared else 0])
                   .generate_state(1)[0])  # mixed: worker A at n trials and B at n + 1 must not collide
        st.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.spec.startup_trials,
                                                multivariate=True, constant_liar=True)
        bar = tqdm(total=target, initial=done, desc="tune", unit="trial", disable=not progress)

        def objective(trial):
            try:
                return _objective(trial)
            except SystemExit as e:  # bake's signal handler: Optuna records the trial as failed, keeps the others
                raise KeyboardInterrupt(str(e)) from None

        def _objective(trial):
            t0 = time.time()
            values = {path: p.suggest(trial, path) for path, p in s.spec.params.items()}
            trial.set_user_attr("values", values)
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # who ran it (shared storage)
            try:
                p = bench.plan(values)
            except (NotBakeable, BakeError) as e:
                reason = first_line(e)
                trial.set_user_attr("pruned", reason)
                raise optuna.TrialPruned(reason) from None
            t1 = time.time()
            raw, cmp = bench.measure(p.hooks)
            t2 = time.time()
            m = bench.metrics(raw, cmp)
            trial.set_user_attr("metrics", m)
            trial.set_user_attr("seconds", {"plan": round(t1 - t0, 3), "measure": round(t2 - t1, 3),
                                            "trial": round(time.time() - t0, 3)})
            for c in s.spec.bounds:
                trial.set_constraint(c.spec, c.excess(m[c.metric.spec]))
            return tuple(m[o] for o in s.spec.objectives)

        def tick(study, trial):
            bar.n = len(_finished(study))
            bar.refresh()

        stop = optuna.study.MaxTrialsCallback(target, states=(optuna.trial.TrialState.COMPLETE,
                                                               optuna.trial.TrialState.PRUNED,
                                                               optuna.trial.TrialState.RUNNING))
        try:
            st.optimize(objective, n_trials=target - done, callbacks=[tick, stop], catch=())
        except (KeyboardInterrupt, SystemExit):
            bar.close()
            print(f"bake tune: stopped; the {len(_finished(st))} finished trials stay in {redact(s.storage)}: "
                  "the same command continues the study", file=sys.stderr)
            raise
        finally:
            bar.close()
            rep = report(s, st, splits, base_seconds=bench.base_seconds, target=target)
            write_report(s, rep)
        return rep
    rep = report(s, st, splits, target=target)
    write_report(s, rep)
    return rep


def _own_study(path: Path) -> str | None:
    by = staging.marker_of(path)
    if by is None and (path / STUDY_DB).is_file():
        return None
    if by is None:
        return f"it has no {staging.MARKER} marker"
    return None if by == MARKER_WHAT else f"it was written by {by or 'an unknown command'}"


_own_study.command = MARKER_WHAT


# --- the report -----------------------------------------------------------------------------------

def trial_row(t, spec: Tune) -> dict:
    from optuna.trial import TrialState

    row = {"number": t.number, "state": t.state.name.lower(), "values": t.user_attrs.get("values", {}),
           "metrics": t.user_attrs.get("metrics", {}), "seconds": t.user_attrs.get("seconds", {})}
    if t.state == TrialState.PRUNED:
        row["pruned"] = t.user_attrs.get("pruned") or "pruned"
    if t.state == TrialState.COMPLETE:
        row["feasible"] = all(c.ok(row["metrics"][c.metric.spec]) for c in spec.bounds)
    return row


def front(rows: list[dict], spec: Tune) -> list[dict]:
    """The feasible complete trials that no other feasible one beats on every objective."""
    ok = [r for r in rows if r["state"] == "complete" and r.get("feasible")]
    sign = {m.spec: (1 if m.direction == "minimize" else -1) for m in spec.metrics}

    def key(r):
        return [sign[o] * r["metrics"][o] for o in spec.objectives]

    out = [r for r in ok if not any(all(a <= b for a, b in zip(key(q), key(r))) and key(q) != key(r) for q in ok)]
    return sorted(out, key=key)


def report(s: Setup, st, splits: dict, base_seconds: float | None = None, target: int | None = None) -> dict:
    from ..evaluation.subjects import versions

    rows = [trial_row(t, s.spec) for t in st.trials]
    fr = front(rows, s.spec)
    done = [r for r in rows if r["state"] == "complete"]
    cost = {}
    if done and all(r["seconds"] for r in done):
        trial = float(np.mean([r["seconds"]["trial"] for r in done]))
        measure = float(np.mean([r["seconds"]["measure"] for r in done]))
        cost = {"seconds per trial": round(trial, 2), "of which measuring the hooked model": round(measure, 2),
                "trial / measurement": round(trial / measure, 3) if measure else None}
        if base_seconds is not None:
            cost["base measured once (seconds)"] = round(base_seconds, 2)
    return {"recipe": str(s.path), "study": s.name, "storage": redact(s.storage), "folder": str(s.folder),
            "objectives": [{"name": m.spec, "direction": m.direction, "about": m.objective.about}
                           for m in s.spec.metrics],
            "constraints": s.spec.constraints, "params": {k: v.model_dump(exclude_defaults=True)
                                                          for k, v in s.spec.params.items()},
            "sampler": {"name": "TPE (multivariate, Optuna)", "seed": s.spec.seed, "startup": s.spec.startup_trials},
            "trials": {"target": target or s.spec.trials, "complete": len(done),
                       "pruned": sum(r["state"] == "pruned" for r in rows),
                       "failed or interrupted": sum(r["state"] == "fail" for r in rows),
                       "running": sum(r["state"] == "running" for r in rows)},
            "splits": {k: {"source": e["source"], "sha256": e["sha256"], "n": e["n"],
                           "tuning": {"n": e["tuning"]["n"], "sha256": e["tuning"]["sha256"]},
                           "heldout": {"n": e["heldout"]["n"], "sha256": e["heldout"]["sha256"]}}
                       for k, e in splits.items()},
            "limit": s.spec.limit, "cost": cost, "front": [r["number"] for r in fr], "all": rows,
            "versions": versions()}


def write_report(s: Setup, rep: dict) -> None:
    with staging.replacing(s.folder / REPORT) as tmp:
        Path(tmp).write_text(json.dumps(rep, indent=1, default=str))
    try:
        plot(rep, s.folder / PLOT)
        rep["plot"] = str(s.folder / PLOT)
    except ValueError:
        pass


def plot(rep: dict, dest: Path) -> None:
    """The trials on the first two objectives (one objective: by trial number), the front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rep["all"] if r["state"] == "complete"]
    if not rows:
        raise ValueError("no complete trial")
    objs = [o["name"] for o in rep["objectives"]]
    x_of = (lambda r: r["metrics"][objs[1]]) if len(objs) > 1 else (lambda r: r["number"])
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for ok, colour, label in ((True, "tab:blue", "feasible"), (False, "0.7", "violates a constraint")):
        pts = [r for r in rows if r.get("feasible", True) == ok]
        if pts:
            ax.scatter([x_of(r) for r in pts], [r["metrics"][objs[0]] for r in pts], c=colour, s=18, label=label)
    fr = [r for r in rows if r["number"] in rep["front"]]
    fr.sort(key=x_of)
    if fr:
        ax.plot([x_of(r) for r in fr], [r["metrics"][objs[0]] for r in fr], "o-", c="tab:red", ms=5, label="front")
        for r in fr:
            ax.annotate(str(r["number"]), (x_of(r), r["metrics"][objs[0]]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel(objs[1] if len(objs) > 1 else "trial")
    ax.set_ylabel(objs[0])
    ax.set_title(f"bake tune {Path(rep['recipe']).name}: {len(rows)} trials (tuning split)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with staging.replacing(dest) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def show(s: Setup) -> dict:
    """The report of the study as it is now (finished or interrupted), from its storage."""
    st = _open(s, create=False)
    splits = {k: json.loads(json.dumps(v)) for k, v in _saved_splits(s).items()}
    rep = report(s, st, splits)
    write_report(s, rep)
    return rep


def _saved_splits(s: Setup) -> dict:
    """The splits written by the search (re-derived: the same seed and data give the same files)."""
    return split(s.data_files, s.spec.holdout, s.spec.seed, s.folder / "splits")


# --- picking a trial ------------------------------------------------------------------------------

def rebase(data, old: Path, new: Path):
    """`data` with every relative path that names a file or folder beside the recipe (`old`) rewritten
    relative to the folder the resolved recipe goes to (`new`)."""
    if isinstance(data, dict):
        return {k: rebase(v, old, new) for k, v in data.items()}
    if isinstance(data, list):
        return [rebase(v, old, new) for v in data]
    if isinstance(data, str) and data and not data.startswith("builtin:") and not Path(data).is_absolute() \
            and (old / data).exists():
        return os.path.relpath(old / data, new)
    return data


def _own_tuned(path: Path) -> str | None:
    """None when `path` is a recipe that `bake tune --pick` wrote (its provenance says so)."""
    try:
        data = schema.load_yaml(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, RecipeError):
        return "it is not a recipe bake tune wrote"
    ok = isinstance(data, dict) and isinstance(data.get("provenance"), dict) and "tuned" in data["provenance"]
    return None if ok else "it is not a recipe bake tune wrote"


_own_tuned.command = "bake tune --pick"


def pick(s: Setup, number: int, out: str | Path | None = None, force: bool = False, progress: bool = True,
         trust: bool = False) -> dict:
    """Re-measure trial `number` on the held-out split; write the resolved recipe (the trial's values
    set, no tune block) with both splits' figures in `provenance.tuned`."""
    import yaml
    from optuna.trial import TrialState

    from ..evaluation.subjects import versions

    st = _open(s, create=False)
    t = next((t for t in st.trials if t.number == number), None)
    if t is None:
        raise BakeError(f"--pick {number}: the study {s.name!r} has no trial {number} (trials 0..{len(st.trials) - 1})")
    if t.state != TrialState.COMPLETE:
        why = f" ({t.user_attrs['pruned']})" if t.user_attrs.get("pruned") else ""
        raise BakeError(f"--pick {number}: trial {number} is {t.state.name.lower()}{why}; pick a complete one "
                        f"(`bake tune {s.path} --show` lists the front)")
    dest = staging.resolve_path(out or s.folder / f"trial-{number}.yaml", "--out")
    if dest.suffix.lower() not in (".yaml", ".yml"):
        raise BakeError(f"--out {dest}: the resolved recipe is a .yaml file")
    staging.check_target(dest, folder=False, force=force, protect=[s.path, *s.data_files.values()],
                         refuse=_own_tuned, what="resolved recipe")
    values = t.user_attrs["values"]
    splits = _saved_splits(s)
    bench = Bench(s, splits, "heldout", progress, trust, s.spec.heldout_limit)
    p = bench.plan(values)
    raw, cmp = bench.measure(p.hooks)
    measured = {su.name for su in bench.suites}
    held = {}
    for m in [*s.spec.metrics, *(c.metric for c in s.spec.bounds)]:
        su = m.suite(measured)
        held[m.spec] = {"value": m.value(cmp[su], raw[su]), "ci95": m.interval(cmp[su], raw[su])}
    data = candidate(s.data, values)
    old, new = s.path.resolve().parent, dest.parent
    if "output" in data:  # the bake goes beside the recipe's own output, named after the resolved recipe
        data["output"] = os.path.relpath((old / data["output"]).parent / dest.stem, new)
    data = rebase(data, old, new)
    data["provenance"] = {"tuned": {
        # names, not this machine's paths: the block travels into the baked folder and its model card
        "by": "bake tune", "recipe": s.path.name, "study": s.name,
        "storage": redact(s.storage) if s.shared else STUDY_DB,
        "trial": number, "values": values, "objectives": s.spec.objectives, "constraints": s.spec.constraints,
        "sampler": f"Optuna TPE (multivariate), seed {s.spec.seed}, {s.spec.startup_trials} random start-up trials",
        "trials finished": len(_finished(st)),
        "tuning": t.user_attrs["metrics"], "heldout": held,
        "data": {k: {"source": Path(e["source"]).name, "sha256": e["sha256"],
                     "tuning": {"n": e["tuning"]["n"], "sha256": e["tuning"]["sha256"]},
                     "heldout": {"n": e["heldout"]["n"], "sha256": e["heldout"]["sha256"],
                                 "measured": min(e["heldout"]["n"], s.spec.heldout_limit or e["heldout"]["n"])}}
                 for k, e in splits.items()},
        "versions": versions(), "date": time.strftime("%Y-%m-%d")}}
    data = json.loads(json.dumps(data, default=str))  # plain values (torch's version is a str subclass)
    schema.parse(data, str(dest), new)  # what is written is a recipe
    text = (f"# {dest.name}: {s.path.name} with the values of trial {number} of `bake tune` (study {s.name});\n"
            "# provenance.tuned holds its figures on the tuning split and on the held-out split it never saw.\n"
            + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with staging.replacing(dest) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return {"recipe": str(dest), "trial": number, "values": values, "tuning": t.user_attrs["metrics"],
            "heldout": held, "splits": data["provenance"]["tuned"]["data"],
            "next": f"bake apply {dest}"}
