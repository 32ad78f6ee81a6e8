"""The result of a verification (the `verification` section of bake_report.json), typed, with its
two renderings: `terminal()` for the CLI and `card_row()` for the model card's table."""

from __future__ import annotations

from ..results import Record


def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def _g(x) -> str:
    return "-" if x is None else f"{x:.3g}"


class Tolerance(Record):
    max_abs_logit: float | None = None
    min_top1: float | None = None
    hidden_state_rel: float | None = None


class Metrics(Record):
    max_abs_logit: float | None = None
    max_rel_logit: float | None = None
    top1_agreement: float | None = None
    kl_mean: float | None = None
    kl_max: float | None = None
    greedy_agreement: float | None = None
    greedy_identical_prompts: str | None = None
    first_divergent_hidden_state: int | None = None


class Verification(Record):
    """Hooked original vs baked: what `bake apply` and `bake verify` report (bake/verification/)."""

    status: str  # passed | approximate | failed
    failures: list[str] = []
    mode: str | None = None  # full | streamed | local
    mode_asked: str | None = None
    exact: bool | None = None
    compute_dtype: str | None = None
    device: str | None = None  # where the end-to-end pass ran (bake.model.device)
    tolerance: Tolerance = Tolerance()
    metrics: Metrics = Metrics()  # (empty for --verify local)
    generate_tokens: int | None = None
    hidden_state_max_abs: list[float] | None = None
    hidden_state_max_rel: list[float] | None = None
    local: dict | None = None  # the module-local checks (bake/verification/localcheck.py)
    prompts: list[dict] = []

    def local_lines(self) -> list[str]:
        loc = self.local
        if not loc:
            return []
        rows = loc["modules"]
        worst = max((r["max_rel"] for r in rows if r["exact"]), default=None)
        n_rand, n_rec = (sum(kind in r["inputs"] for r in rows) for kind in ("random", "recorded"))
        lines = [f"  module-local checks   {loc['status'].upper()}: {len(rows)} module checks, hooked vs baked "
                 f"({n_rand} on random inputs, {n_rec} on inputs recorded end to end), max relative diff {_fmt(worst)} "
                 f"(tolerance {loc['tolerance_rel']:g}); {sum(c['status'] == 'passed' for c in loc['copies'])} "
                 "copied or created tensors identical"]
        lines += [f"  unchecked: {u}" for u in loc["unchecked"][:5]]
        if len(loc["unchecked"]) > 5:
            lines.append(f"  ... {len(loc['unchecked']) - 5} more unchecked (see bake_report.json)")
        return lines

    def terminal(self) -> str:
        """The CLI's rendering: the verdict first, the figures, what was checked."""
        if self.mode == "local":
            lines = [f"verification: {self.status.upper()}  (module-local checks only: --verify local"
                     + (", the models do not fit in memory for the end-to-end pass" if self.mode_asked == "auto" else "")
                     + "; no end-to-end logits compared)", *self.local_lines()]
            if not self.exact:
                measured = any(not r["exact"] for r in self.local["modules"])
                lines.append("  APPROXIMATE bake: " + ("the module-local figures above are the measured deviation from the "
                                                       "hooks" if measured else "no module-local check measures its "
                                                       "deviation; --verify full or streamed measures it end to end"))
            lines.append("  checked               the hooked modules alone. More: --verify full (the whole model end to "
                         "end: logits, hidden states, greedy tokens), or streamed when it does not fit in memory")
            return "\n".join(lines + [f"  FAIL: {f}" for f in self.failures])
        m, t = self.metrics, self.tolerance
        first = m.first_divergent_hidden_state
        lines = [
            f"verification: {self.status.upper()}  ({len(self.prompts)} prompts, hooked original vs baked "
            f"reloaded from disk, {self.compute_dtype} compute" + (f" on {self.device}" if self.device else "")
            + (", streamed from disk module by module, teacher-forced only" if self.mode == "streamed" else "") + ")",
            f"  max |logit diff|      {_fmt(m.max_abs_logit)}   (tolerance {_fmt(t.max_abs_logit, 'g')})",
            f"  max relative diff     {_fmt(m.max_rel_logit)}",
            f"  top-1 agreement       {m.top1_agreement:.2%}   (minimum {t.min_top1:.0%})",
            f"  KL(hooked||baked)     mean {_fmt(m.kl_mean)}, max {_fmt(m.kl_max)}",
            (f"  greedy tokens agree   {_fmt(m.greedy_agreement, '.2%')}   ({m.greedy_identical_prompts} prompts "
             "identical: the baked model's greedy choice at each of the hooked model's steps)"
             if m.greedy_agreement is not None else "  greedy tokens         not compared (no generation in this mode)"),
            f"  first divergent layer {'none' if first is None else f'hidden state {first}'} "
            f"(relative tolerance {t.hidden_state_rel:g})",
            *self.local_lines(),
        ]
        if not self.exact:
            lines.append("  APPROXIMATE bake: the figures above are the measured deviation from the hooks")
        lines.append(self.checked())
        for f in self.failures:
            lines.append(f"  FAIL: {f}")
        return "\n".join(lines)

    def checked(self) -> str:
        """What this verification ran, and how to check more or less."""
        gen = self.generate_tokens or 0
        local = self.local or {}
        done = (f"{len(self.prompts)} probe prompts teacher-forced" + (f", {gen} greedy steps each" if gen else "")
                + (f", {len(local.get('modules', []))} modules alone" if local else ""))
        return (f"  checked               {done}. More: `verify: {{prompts: [...], generate_tokens: N}}` in the recipe; "
                "less: --verify local (modules alone, no end-to-end pass)")

    def card_row(self) -> str:
        """The model card's row for the Hugging Face checkpoint (its verification table)."""
        m, tol, loc = self.metrics, self.tolerance.max_abs_logit, self.local
        local = (f"module-local checks {loc['status']} ({len(loc['modules'])} modules, {len(loc['unchecked'])} "
                 "unchecked)" if loc else "")
        if self.mode == "local":
            return (f"| Hugging Face (safetensors) | transformers, {self.compute_dtype}, one module at a time | each "
                    f"hooked module of the original | {self.status} | - (no end-to-end pass) | - | {local} |")
        how = ", streamed module by module from disk" if self.mode == "streamed" else ""
        return (f"| Hugging Face (safetensors) | transformers, {self.compute_dtype}{how} | the hooked original model | "
                f"{self.status} | {_g(m.max_abs_logit)}" + (f" (tolerance {tol:g})" if tol else "")
                + f" | {m.greedy_identical_prompts}" + (" prompts" if m.greedy_agreement is not None else "")
                + f" | top-1 {m.top1_agreement:.2%}, KL max {_g(m.kl_max)}" + (f"; {local}" if local else "")
                + " |")
