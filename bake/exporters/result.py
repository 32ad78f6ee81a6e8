"""The result of one export (an entry of bake_report.json's `exports`), typed, with its two
renderings: `terminal()` for the CLI and `card_row()` for the model card's verification table."""

from __future__ import annotations

from pathlib import Path

from ..results import Record


def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


class ExportResult(Record):
    """An exported file or folder, verified in its own runtime against the baked PyTorch model."""

    format: str
    path: str
    status: str  # passed | approximate | failed
    failures: list[str] = []
    runtime: str | None = None
    against: str | None = None
    metrics: dict = {}  # max_abs_logit, greedy_identical_prompts, top1_agreement, ... as the runtime allows
    tolerance: dict = {}
    type: str | None = None  # gguf: the quantization type
    mode: str | None = None  # gguf: patch | convert
    source: str | None = None  # gguf patch: the GGUF it was baked into
    baseline: dict | None = None  # gguf patch: the unbaked source against its own weights, for scale
    note: str | None = None
    sha256: str | None = None

    def terminal(self) -> str:
        """The CLI's rendering: the verdict, then each figure its runtime gave."""
        m = self.metrics
        lines = [f"{self.format} export: {self.status.upper()}  {self.path}  ({self.runtime or ''} vs "
                 f"{self.against or ''})"]
        if self.type:
            lines.append(f"  type {self.type}, {self.mode}" + (f" of {self.source}" if self.source else ""))
        if "max_abs_logit" in m:
            tol = self.tolerance.get("max_abs_logit")
            tol = f"{tol:g}" if isinstance(tol, (int, float)) else tol
            rel = f" ({m['max_abs_logit_relative']:.2g} of the largest logit)" if "max_abs_logit_relative" in m else ""
            lines.append(f"  max |logit diff|      {_fmt(m['max_abs_logit'])}{rel}" + (f"   (tolerance {tol})" if tol else ""))
        if m.get("top1_flips"):
            lines.append(f"  top-1 flips           {m['top1_flips']} on the teacher-forced sequences, at reference "
                         f"margins up to {_fmt(m['flip_margin_max'])}")
        if "greedy_identical_prompts" in m:
            lines.append(f"  greedy tokens         {m['greedy_identical_prompts']} prompts identical"
                         + (f", {m['greedy_token_agreement']:.2%} of tokens agree" if "greedy_token_agreement" in m else "")
                         + (f"; top-1 {m['top1_agreement']:.2%} on the same sequences" if "top1_agreement" in m else ""))
        if "tokenization_identical" in m:
            lines.append(f"  tokenization          {m['tokenization_identical']} probe texts tokenized as transformers does")
        if "genai_identical_prompts" in m:
            lines.append(f"  onnxruntime-genai     {m['genai_identical_prompts']} prompts identical")
        if self.baseline:
            b = self.baseline["metrics"]
            lines.append(f"  baseline              {b['greedy_identical_prompts']} prompts identical, "
                         f"{b['greedy_token_agreement']:.2%} of tokens agree, top-1 {b['top1_agreement']:.2%}, "
                         f"max |logit diff| {_fmt(b['max_abs_logit'])}  ({self.baseline['what']})")
        if self.note:
            lines.append(f"  note: {self.note}")
        lines += [f"  FAIL: {f}" for f in self.failures]
        return "\n".join(lines)

    def card_row(self) -> str:
        """The model card's row for this export (its verification table)."""
        m, other = self.metrics, []
        if "genai_identical_prompts" in m:
            other.append(f"onnxruntime-genai generator: {m['genai_identical_prompts']} identical")
        if "greedy_token_agreement" in m:
            other.append(f"token agreement {m['greedy_token_agreement']:.2%}, top-1 {m['top1_agreement']:.2%}")
        if self.baseline:
            b = self.baseline["metrics"]
            other.append(f"unbaked source GGUF vs its PyTorch weights: token agreement {b['greedy_token_agreement']:.2%}, "
                         f"top-1 {b['top1_agreement']:.2%}")
        if self.type:
            other.append(f"type {self.type}" + (f", {self.mode}" if self.mode else ""))
        return (f"| {self.format.upper()} (`{self.path}`) | {self.runtime or '-'} | {self.against or '-'} | "
                f"{self.status} | {_fmt(m.get('max_abs_logit'))} | {m.get('greedy_identical_prompts', '-')} prompts | "
                f"{'; '.join(other) or '-'} |")

    @property
    def inside(self) -> bool:
        """Written inside the baked folder (a relative path), so uploaded with it."""
        return not Path(self.path).is_absolute()
