"""Learning intervention artifacts from data: AURA alphas, steering vectors, refusal directions.

Activations are collected with batched forward passes and forward hooks; only pooled values
(samples x units) are kept, never per-token activations of the whole data set.
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..compile.hooks import hooked
from ..errors import BakeError
from ..families import resolve as resolve_family
from ..model.device import for_dtype, to_model
from ..model.loading import load_model, load_tokenizer
from ..model.source import Checkpoint, resolve_model
from . import stats

POOLINGS = ("max", "mean", "last")


# --- pooling (pure) ---------------------------------------------------------------------------


def pool(h: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool [B, T, U] over each row's real tokens (mask [B, T], 1 = real) -> [B, U]."""
    m = mask.to(torch.bool).unsqueeze(-1)
    if how == "max":
        return h.masked_fill(~m, float("-inf")).amax(1)
    if how == "mean":
        return (h * m).sum(1) / m.sum(1).clamp_min(1)
    if how == "last":  # the last real token, whichever side the padding is on
        t = torch.arange(mask.shape[1], device=mask.device)
        last = (mask.to(torch.long) * t).argmax(1)
        return h[torch.arange(h.shape[0]), last]
    raise BakeError(f"unknown pooling {how!r}; use one of {', '.join(POOLINGS)}")


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted over real tokens, so that a text has the same positions whichever side
    its batch is padded on (left padding otherwise shifts them, and rotary embeddings, computed in
    float32, round differently at other positions)."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


# --- model access -----------------------------------------------------------------------------


def process_group():
    """accelerate's process state when this process is one of several (`accelerate launch
    --multi_gpu --num_processes N`, which is torchrun underneath, or torchrun itself), else None.
    The processes talk over gloo (they exchange rows gathered on the CPU, whatever device each one
    computes on: `--device auto` gives process k the GPU of its LOCAL_RANK); `accelerate launch --cpu`
    would need mpirun for more than one process."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=True)


def shared(texts: list, fn, progress: bool = True):
    """fn(texts, progress) -> a tensor [len(texts), ...] or a dict of them, computed data parallel when
    this process is one of several: each process runs `fn` on its contiguous share of the texts and
    every process gathers all the rows in text order, so what follows (AUROC needs the ranks of all
    texts; means, KL) sees the rows a single process would have: the exact reduction is the gather
    itself (float64 rows, no approximation)."""
    state = process_group()
    if state is None:
        return fn(texts, progress)
    from accelerate.utils import gather_object

    if len(texts) < state.num_processes:  # too few to share: every process computes them all
        return fn(texts, progress and state.is_main_process)
    with state.split_between_processes(list(range(len(texts)))) as mine:
        local = fn([texts[i] for i in mine], progress and state.is_main_process)
        first = mine[0]
    parts = [p for _, p in sorted(gather_object([(first, local)]), key=lambda p: p[0])]  # in text order
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def process_count() -> int:
    state = process_group()
    return 1 if state is None else state.num_processes


def is_main_process() -> bool:
    state = process_group()
    return state is None or state.is_main_process


def streams(ckpt: Checkpoint, max_memory: int | None) -> bool:
    """Must learning stream the model from disk? Yes when the model in float64 (the AURA responses'
    dtype) needs more than `max_memory` bytes, or than 60% of the memory available when none is given."""
    from ..model.loading import fits_in_memory

    return not fits_in_memory(8 * sum(math.prod(s) for s in ckpt.shapes.values()), max_memory)


class Runner:
    """A model and tokenizer loaded once for learning (float32, eval mode). A model larger than
    `max_memory` bytes (default: 60% of the memory available) is streamed: each module's weights are
    read from the safetensors files when it runs (`streaming.load_streamed`), so every batch reads
    the model once and memory holds about one module; a larger `--batch-size` reads it less often."""

    def __init__(self, model: str | Path | Checkpoint, trust_remote_code: bool = False, max_memory: int | None = None):
        self.ckpt = model if isinstance(model, Checkpoint) else resolve_model(str(model))
        self.family = resolve_family(self.ckpt.config, self.ckpt.shapes, trust_remote_code)
        self.streamed = streams(self.ckpt, max_memory)
        if self.streamed:
            from ..model.streaming import load_streamed

            self.model = load_streamed(self.ckpt.path, self.family.key_rules, trust_remote_code=trust_remote_code,
                                       dtype=torch.float32, moe=self.family.moe)
        else:
            self.model = load_model(self.ckpt.path, trust_remote_code=trust_remote_code, moe=self.family.moe)
        self.tok = load_tokenizer(self.ckpt.path, trust_remote_code=trust_remote_code)
        if self.tok is None:
            raise BakeError(f"{self.ckpt.spec}: learning needs a tokenizer in the model folder")
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.n_layers = self.family.n_layers

    def modules(self, patterns: list[str]) -> list[str]:
        names = [n for n, m in self.model.named_modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"]
        out = []
        for p in patterns:
            hits = [n for n in names if fnmatch.fnmatchcase(n, p)]
            if not hits:
                raise BakeError(f"--modules {p!r} matches no Linear module")
            out += [h for h in hits if h not in out]
        return out

    def batches(self, texts: list[str], batch_size: int, max_length: int | None, desc: str, progress: bool):
        for i in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", disable=not progress):
            enc = self.tok(texts[i: i + batch_size], return_tensors="pt", padding=True,
                           truncation=max_length is not None, max_length=max_length)
            yield to_model(self.model, enc)  # on the model's device (bake.model.device)

    def forward(self, enc) -> None:
        """The base model (no LM head: hooks see everything, no [B, T, vocab] logits) on a tokenized
        batch, with positions counted over real tokens where the model takes them."""
        import inspect

        base = self.model.base_model
        if not hasattr(self, "_takes_positions"):  # once per runner, not per batch
            self._takes_positions = "position_ids" in inspect.signature(base.forward).parameters
        if self._takes_positions:
            enc = {**enc, "position_ids": positions(enc["attention_mask"])}
        base(**enc)

    def chat(self, instruction: str) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template([{"role": "user", "content": instruction}],
                                                add_generation_prompt=True, tokenize=False)
        return instruction

    @torch.no_grad()
    def responses(self, texts: list[str], modules: list[str], pooling: str = "max", max_length: int = 128,
                  batch_size: int = 32, progress: bool = True, dtype: torch.dtype = torch.float64
                  ) -> dict[str, torch.Tensor]:
        """{module: pooled outputs [len(texts), units]} (float64, in the order of `texts`).

        The forward passes run in `dtype`. In float64 the responses do not depend on how the texts
        are batched or padded (differences of about 1e-14), so rank statistics (AUROC) give the
        same alphas for any batch size; in float32 the rounding depends on the batch's shape (about
        1e-6 of a unit's range) and near-ties between texts can swap ranks."""
        param = next(self.model.parameters())
        source, home = param.dtype, param.device
        # lossless both ways from float32 to float64 and back; a device without the dtype (MPS has no
        # float64) hands this pass to the CPU; a streamed skeleton stays on meta (its weights are read as it runs)
        self._place(home if home.type == "meta" else for_dtype(dtype, home)[0], dtype)
        try:
            return shared(texts, lambda part, bar: self._responses(part, modules, pooling, max_length, batch_size, bar),
                          progress)
        finally:
            self._place(home, source)

    def _place(self, dev: torch.device, dtype: torch.dtype) -> None:
        if dev.type == "meta":  # a streamed skeleton: only its dtype changes, as its weights are read
            self.model.to(dtype)
        else:
            self.model.to(dev, dtype)

    def _responses(self, texts, modules, pooling, max_length, batch_size, progress):
        table = dict(self.model.named_modules())
        out: dict[str, list[torch.Tensor]] = {m: [] for m in modules}
        current = {}

        def make(name):
            def hook(mod, args, output):
                mask = current["mask"]
                if output.ndim == 2 and output.shape[0] == mask.numel():  # MoE experts see tokens flattened
                    output = output.reshape(*mask.shape, -1)
                current[name] = pool(output.double(), mask, pooling).cpu()  # [B, units], float64 from here
            return hook

        handles = [table[m].register_forward_hook(make(m)) for m in modules]
        # batch texts of similar length together (less padding), then restore the input order
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        try:
            for enc in self.batches([texts[i] for i in order], batch_size, max_length, "responses", progress):
                current["mask"] = enc["attention_mask"]
                self.forward(enc)
                for m in modules:
                    out[m].append(current[m])
        finally:
            for h in handles:
                h.remove()
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return {m: torch.cat(v)[inverse] for m, v in out.items()}

    @torch.no_grad()
    def token_states(self, texts: list[str], layer: int, max_length: int = 128, batch_size: int = 16,
                     progress: bool = True, skip_first: bool = True, input_of: str | None = None
                     ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Block `layer`'s output (or the input of module `input_of`) at every real token -> ([tokens, hidden]
        float32, [(text, position)]). The first position of each text is left out with `skip_first` (its
        state is the attention sink's, orders of magnitude larger than the others: an SAE would spend
        features on it)."""
        table = dict(self.model.named_modules())
        rows, where, current = [], [], {}
        if input_of is not None:
            handle = table[input_of].register_forward_pre_hook(lambda m, a: current.__setitem__("h", a[0]))
        else:
            handle = table[self.family.block(layer)].register_forward_hook(
                lambda m, a, o: current.__setitem__("h", o[0] if isinstance(o, tuple) else o))
        side = self.tok.padding_side
        self.tok.padding_side = "right"
        try:
            start = 0
            for enc in self.batches(texts, batch_size, max_length, "activations", progress):
                self.forward(enc)
                mask = enc["attention_mask"].bool()
                if skip_first:
                    mask[:, 0] = False
                rows.append(current["h"][mask].float().cpu())
                where += [(start + int(i), int(t)) for i, t in mask.nonzero().tolist()]
                start += mask.shape[0]
        finally:
            self.tok.padding_side = side
            handle.remove()
        return torch.cat(rows), where

    @torch.no_grad()
    def continue_texts(self, texts: list[str], tokens: int, seed: int = 0, batch_size: int = 16,
                       progress: bool = True) -> list[str]:
        """Each text followed by `tokens` sampled tokens of the model itself (top-p 0.95, seeded): more
        text in the model's own distribution from a small seed corpus."""
        from transformers import GenerationConfig

        side = self.tok.padding_side
        self.tok.padding_side = "left"
        cfg = GenerationConfig(max_new_tokens=tokens, do_sample=True, top_p=0.95, top_k=0,
                               pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id)
        out = []
        try:
            for b, enc in enumerate(self.batches(texts, batch_size, None, "continuing texts", progress)):
                torch.manual_seed(seed + b)
                seq = self.model.generate(**enc, generation_config=cfg)
                out += self.tok.batch_decode(seq, skip_special_tokens=True)
        finally:
            self.tok.padding_side = side
        return out

    def residuals(self, texts: list[str], layers: list[int], position: str | int = "last",
                  batch_size: int = 16, progress: bool = True, hooks=(), site: str = "block_out") -> torch.Tensor:
        """`_residuals` (below), data parallel under `accelerate launch` (`shared`)."""
        return shared(texts, lambda part, bar: self._residuals(part, layers, position, batch_size, bar, hooks, site),
                      progress)

    @torch.no_grad()
    def _residuals(self, texts: list[str], layers: list[int], position: str | int = "last",
                   batch_size: int = 16, progress: bool = True, hooks=(), site: str = "block_out") -> torch.Tensor:
        """The residual stream at a steering site of each layer, at `position` -> [len(texts),
        len(layers), hidden] float64. Sites: `block_out` and `mlp_out`, the block's output (resid_post:
        the MLP writes last); `attn_out`, the stream right after the attention write (the block's
        output less what its MLP writers add), where `steer` with `site: attn_out` adds its vector.

        position: "last" (last real token), "mean" (over real tokens), a negative int -k (the k-th
        token from the end, for post-instruction positions), or a list of negative ints (then
        [len(texts), len(position), len(layers), hidden]). Texts are used as given (already
        formatted); padding is on the left so negative positions line up.
        """
        from ..families.probe import SITES, site_of

        if site not in ("block_out", *SITES):
            raise BakeError(f"site {site!r}: use block_out, {', '.join(SITES)}")
        table = dict(self.model.named_modules())
        blocks = [self.family.block(i) for i in layers]
        rows, current, mlp = [], {}, {}

        def make(j):
            def hook(mod, args, output):
                current[j] = (output[0] if isinstance(output, tuple) else output).double()
            return hook

        def less(j):  # an MLP writer's output, taken off the block's output for the attn_out site
            def hook(mod, args, output):
                mlp[j] = mlp.get(j, 0) + (output[0] if isinstance(output, tuple) else output).double()
            return hook

        side = self.tok.padding_side
        self.tok.padding_side = "left"
        handles = [table[b].register_forward_hook(make(j)) for j, b in enumerate(blocks)]
        if site == "attn_out":
            for j, i in enumerate(layers):
                writers = [w.module for w in self.family.blocks[i] if site_of(w.module.rsplit(blocks[j] + ".", 1)[-1]) == "mlp_out"]
                if not writers:
                    raise BakeError(f"block {i}: the family's probe found no MLP writer, so the stream after the "
                                    "attention write cannot be told apart from the block's output")
                handles += [table[m].register_forward_hook(less(j)) for m in writers]
        try:
            with hooked(self.model, list(hooks)):
                for enc in self.batches(texts, batch_size, None, "activations", progress):
                    mlp.clear()
                    self.forward(enc)
                    mask = enc["attention_mask"]
                    per = []
                    for j in range(len(blocks)):
                        h = current[j] - mlp[j] if site == "attn_out" else current[j]
                        if isinstance(position, (list, tuple)):
                            per.append(h[:, list(position)])
                        elif position == "mean":
                            per.append(pool(h, mask, "mean"))
                        else:
                            per.append(h[:, -1 if position == "last" else int(position)])
                    rows.append(torch.stack(per, 2 if isinstance(position, (list, tuple)) else 1).cpu())
        finally:
            self.tok.padding_side = side
            for h in handles:
                h.remove()
        return torch.cat(rows)


def parse_layers(spec: str | list[int], n_layers: int) -> list[int]:
    """'8:16' -> [8..15], '3,5' -> [3, 5], 'all' -> every block; negative indices count from the end."""
    if isinstance(spec, list):
        items = spec
    elif spec == "all":
        items = list(range(n_layers))
    elif ":" in spec:
        a, b = spec.split(":")
        items = list(range(int(a or 0), int(b) if b else n_layers))
    else:
        items = [int(x) for x in spec.split(",")]
    out = [i + n_layers if i < 0 else i for i in items]
    bad = [i for i in out if not 0 <= i < n_layers]
    if bad or not out:
        raise BakeError(f"layers {spec!r}: out of range for a model with {n_layers} blocks")
    return out


# --- AURA ---------------------------------------------------------------------------------------


def aura_alphas(responses: dict[str, torch.Tensor], labels: list[int], rule: str = "aura", score: str = "auroc",
                k: int | None = None, fraction: float | None = None, per_layer: bool = False,
                value: float = 0.5, strength: float = 1.0, zscore: bool = False):
    """Scores per unit and alphas by rule (`aura`, `damp`, `det0`). Returns (alphas, scores, aurocs)."""
    y = torch.tensor(labels)
    aurocs = {m: stats.auroc(x, y) for m, x in responses.items()}
    scores = aurocs if score == "auroc" else {m: stats.SCORES[score](x, y) for m, x in responses.items()}
    if zscore:
        scores = stats.zscore(scores)
    if rule == "aura":
        alphas = {m: stats.alpha_aura(a) for m, a in aurocs.items()}
    elif rule in ("damp", "det0"):
        if k is None and fraction is None:
            raise BakeError(f"rule {rule!r} needs --top-k or --top-fraction")
        masks = stats.top_mask(scores, k=k, fraction=fraction, per_layer=per_layer)
        alphas = stats.alphas_from_masks(masks, 0.0 if rule == "det0" else value)
    else:
        raise BakeError(f"unknown AURA rule {rule!r}; use aura, damp or det0")
    if strength != 1.0:
        alphas = {m: stats.with_strength(a, strength) for m, a in alphas.items()}
    return alphas, scores, aurocs


def save_alphas(path: Path, alphas: dict, aurocs: dict, scores: dict | None = None, score: str = "auroc",
                means: dict | None = None):
    """safetensors {module: alphas} + {"auroc/<module>": AUROCs} (+ the ranking score, + "mu/<module>": the
    mean pooled response on the negative texts, which a recipe's `mu:` reads for the mean-shift form)."""
    tensors = {m: a.float().contiguous() for m, a in alphas.items()}
    tensors.update({f"mu/{m}": a.float().contiguous() for m, a in (means or {}).items()})
    tensors.update({f"auroc/{m}": a.float().contiguous() for m, a in aurocs.items()})
    if scores is not None and score != "auroc":
        tensors.update({f"{score}/{m}": s.float().contiguous() for m, s in scores.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "bake-aura", "score": score})


def export_statedict(alphas: dict, folder: Path):
    """ml-aura layout: one `<module>.statedict` per module, {"alpha": tensor (1, 1, N)}."""
    folder.mkdir(parents=True, exist_ok=True)
    for m, a in alphas.items():
        torch.save({"alpha": a.float().reshape(1, 1, -1)}, folder / f"{m}.statedict")


# --- steering -----------------------------------------------------------------------------------


def mean_diff(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """[Np, ..., d], [Nn, ..., d] -> mean(pos) - mean(neg)  [..., d]."""
    return pos.mean(0) - neg.mean(0)


def pca_diff(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """First principal component of paired differences, per layer, signed so positives project higher.

    pos, neg: [N, L, d] (paired by index) -> [L, d] unit vectors.
    """
    if pos.shape != neg.shape:
        raise BakeError(f"pca needs paired examples: {pos.shape[0]} positive vs {neg.shape[0]} negative")
    diff = pos - neg
    out = []
    for j in range(diff.shape[1]):
        d = diff[:, j] - diff[:, j].mean(0)
        v = torch.linalg.svd(d, full_matrices=False).Vh[0]
        if (pos[:, j] @ v).mean() < (neg[:, j] @ v).mean():
            v = -v
        out.append(v)
    return torch.stack(out)


def normalize(v: torch.Tensor, how: str | None, acts: torch.Tensor | None = None) -> torch.Tensor:
    """[L, d]: None, 'unit' (|v| = 1) or 'resid' (|v| = mean residual norm at that layer)."""
    if how is None:
        return v
    unit = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if how == "unit":
        return unit
    if how == "resid":
        return unit * acts.norm(dim=-1).mean(0).unsqueeze(-1)
    raise BakeError(f"unknown normalization {how!r}; use unit or resid")
