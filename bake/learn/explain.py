"""Explain SAE features by the words of a fixed vocabulary that carry the most mutual information
about them, and (for comparison) by their top activating contexts in a corpus.

The method, per feature c and word w of the vocabulary V (single-token words of the tokenizer, or
a word list):

- association: the cosine of the word's embedding e_w and the feature's vector W_c, a(w, c). By
  default (`space: output`) e_w is the word's row of the output embedding and W_c the decoder row
  scaled by the final norm's gain, i.e. the words the feature pushes the next-token logits toward
  (the same matrix as the input embedding in a tied model); `space: input` reads the input
  embedding and the raw decoder row. Word vectors are centred (the mean row of the embedding
  matrix removed): all embeddings share a large common component that would otherwise make the
  most frequent tokens look associated with every feature;
- p(c | w) = softmax over features of a(w, .) / temperature; p(w): the word prior, from the
  corpus's token counts (add-one), uniform without a corpus; p(w, c) = p(w) p(c | w),
  p(c) = sum_w p(w, c), p(w | c) = p(w, c) / p(c);
- the explanation I_c is the word set V' of V that maximizes the mutual information I(C; V')
  between "the feature is c" and "the word is in V'". For two binary variables the maximizing set
  is a prefix of the words sorted by p(c | w) (a likelihood-ratio threshold), so every prefix is
  scored and the best kept (at most `max_words`). Frequent words carry little information about
  any one feature (their p(c | w) is spread), so topic words rank above surface patterns.

Functions of tensors, but `feature_vectors`, which reads the embedding and the final norm from a
checkpoint (never the whole model); `bake explain` (bake/api.py) loads the SAE and the corpus.
"""

from __future__ import annotations

import re

import torch

WORD = re.compile(r"^ [A-Za-z][a-z]{2,}$")  # a whole word: a token with a leading space, 3+ letters


def vocabulary(tokenizer, words: list[str] | None = None) -> tuple[list[str], list[list[int]]]:
    """(words, token ids of each): the given words (each with a leading space, tokenized), or every
    single-token word of the tokenizer (a leading space, 3+ letters, lower-case after the first),
    one per spelling."""
    if words:
        out = [(w, tokenizer.encode(" " + w.strip(), add_special_tokens=False)) for w in words if w.strip()]
        return [w.strip() for w, _ in out], [ids for _, ids in out]
    seen, ws, ids = set(), [], []
    for tid in range(len(tokenizer)):
        s = tokenizer.decode([tid])
        key = s.strip().lower()
        if WORD.match(s) and key not in seen:
            seen.add(key)
            ws.append(s.strip())
            ids.append([tid])
    return ws, ids


def word_vectors(embedding: torch.Tensor, ids: list[list[int]]) -> torch.Tensor:
    """[|V|, d]: a word's embedding (the mean over its tokens), centred: the mean row of the whole
    embedding matrix removed."""
    center = embedding.double().mean(0)
    return torch.stack([embedding[i].double().mean(0) - center for i in ids])


def feature_vectors(ckpt, family, w_dec: torch.Tensor, space: str = "output",
                    trust_remote_code: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(word embedding matrix, feature vectors) for `space`: output (the output embedding, and W_dec
    times the final norm's gain) or input (the input embedding, W_dec as it is). Read from the
    checkpoint (`source.Checkpoint`, its `families.Adapter`): the one matrix and the final norm alone,
    never the whole model."""
    from ..errors import BakeError
    from ..model.keys import KeyMap
    from ..model.skeleton import assemble, load, release, skeleton

    skel = skeleton(ckpt.path, trust_remote_code, family.moe)
    names = {id(m): n for n, m in skel.named_modules()}
    keymap = KeyMap(family.key_rules, ckpt.shapes)

    def matrix(module) -> torch.Tensor:
        name = names[id(module)] + ".weight"
        return assemble(keymap, name, tuple(module.weight.shape), ckpt.read, torch.float32)

    emb = skel.get_input_embeddings()
    if space == "input":
        return matrix(emb), w_dec
    head = skel.get_output_embeddings()
    if head is None:
        raise ValueError("the model has no output embedding; use space input")
    try:
        out = matrix(head)
    except BakeError:  # tied: the head is the input embedding
        out = matrix(emb)
    norm = final_norm(skel)
    gain = torch.ones(w_dec.shape[1])
    if norm is not None:
        name = names[id(norm)]
        try:
            gain = norm_gain(load(skel, name, ckpt, keymap, torch.float32), w_dec.shape[1])
        finally:
            release(skel.get_submodule(name))
    return out, w_dec.double() * gain.double()


def final_norm(model):
    """The final norm module of a causal LM (None when bake finds none)."""
    base = model.base_model
    return next((getattr(base, n) for n in ("norm", "final_layernorm", "ln_f", "final_norm") if hasattr(base, n)), None)


def norm_gain(norm, d: int) -> torch.Tensor:
    """The per-channel gain of a final norm: a LayerNorm's weight, or an RMS norm applied to a
    vector of ones (its rms is 1, so what comes out is the gain, an offset such as Gemma's 1 + w
    included)."""
    if isinstance(norm, torch.nn.LayerNorm):
        return norm.weight.detach() if norm.weight is not None else torch.ones(d)
    with torch.no_grad():
        p = next(norm.parameters(), None)
        return norm(torch.ones(1, d, dtype=p.dtype if p is not None else torch.float32))[0].float()


def prior(ids: list[list[int]], counts: torch.Tensor | None) -> torch.Tensor:
    """p(w): from token counts (a word's first token, add-one), uniform without counts."""
    if counts is None:
        return torch.full((len(ids),), 1.0 / len(ids), dtype=torch.float64)
    c = torch.tensor([float(counts[i[0]]) for i in ids], dtype=torch.float64) + 1.0
    return c / c.sum()


CHUNK = 1 << 24  # elements of a [words, features] block computed at a time (64 MB in float32)


class Conditionals:
    """p(c | w) for |V| words and n features, from (centred) word vectors e [|V|, d] and feature vectors
    w [n, d] through their cosines, without holding the [|V|, n] matrix (30k words x 65k features would
    be 8 GB): each word's softmax normalizer is computed once, in blocks of `chunk` elements, and
    columns (features) or rows (words) are made on demand. Float32."""

    def __init__(self, e: torch.Tensor, w: torch.Tensor, temperature: float = 0.05, chunk: int = CHUNK):
        self.e = torch.nn.functional.normalize(e.double(), dim=-1).float()
        self.w = torch.nn.functional.normalize(w.double(), dim=-1).float()
        self.t, self.chunk = temperature, chunk
        rows = max(1, chunk // max(1, len(self.w)))
        self.lse = torch.cat([torch.logsumexp(self.e[i:i + rows] @ self.w.T / self.t, dim=-1)
                              for i in range(0, len(self.e), rows)])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.e), len(self.w)

    def columns(self, features) -> torch.Tensor:
        """p(c | w) [|V|, len(features)] for the given features (indices, a range or a slice)."""
        return torch.exp(self.e @ self.w[features].T / self.t - self.lse.unsqueeze(1))

    def row(self, word: int) -> torch.Tensor:
        """p(. | w) [n] of one word."""
        return torch.softmax(self.e[word] @ self.w.T / self.t, dim=-1)

    def blocks(self):
        """(first feature, columns) over all features, `chunk` elements at a time."""
        step = max(1, self.chunk // max(1, len(self.e)))
        for a in range(0, len(self.w), step):
            yield a, self.columns(slice(a, a + step))


def conditionals(e: torch.Tensor, w: torch.Tensor, temperature: float = 0.05) -> Conditionals:
    """p(c | w) of word vectors e [|V|, d] and feature vectors w [n, d] (see `Conditionals`)."""
    return Conditionals(e, w, temperature)


def binary_mi(p11: torch.Tensor, p1_: torch.Tensor, p_1: torch.Tensor) -> torch.Tensor:
    """I(A; B) of two binary variables from P(A=1, B=1), P(A=1), P(B=1) (nats; broadcasts)."""
    cells = [(p11, p1_, p_1), (p1_ - p11, p1_, 1 - p_1), (p_1 - p11, 1 - p1_, p_1), (1 - p1_ - p_1 + p11, 1 - p1_, 1 - p_1)]
    out = torch.zeros_like(p11)
    for joint, a, b in cells:
        joint = joint.clamp_min(0)
        ok = joint > 0
        out = out + torch.where(ok, joint * torch.log(joint.clamp_min(1e-300) / (a * b).clamp_min(1e-300)), 0.0)
    return out


def explain(p_c_w: Conditionals, p_w: torch.Tensor, feature: int, max_words: int = 20) -> dict:
    """The explanation I_c of one feature: {words (indices into V, by p(c|w)), mi, p_c}."""
    return _explain(p_c_w.columns([feature])[:, 0], p_w, max_words)


def _explain(col: torch.Tensor, p_w: torch.Tensor, max_words: int) -> dict:
    col = col.double()
    p_c = float((p_w * col).sum())
    order = torch.argsort(col, descending=True)[:max(1, max_words)]
    p11 = torch.cumsum(p_w[order] * col[order], 0)
    p_v = torch.cumsum(p_w[order], 0)
    mi = binary_mi(p11, torch.tensor(p_c, dtype=torch.float64), p_v)
    best = int(torch.argmax(mi))
    return {"words": order[:best + 1].tolist(), "mi": float(mi[best]), "p_c": p_c,
            "p_c_given_w": [float(col[i]) for i in order[:best + 1]]}


def rank_features(p_c_w: Conditionals, p_w: torch.Tensor, max_words: int = 20) -> list[tuple[int, float]]:
    """Every feature's best explanation MI, highest first: [(feature, mi)]."""
    scores = [(a + j, _explain(cols[:, j], p_w, max_words)["mi"]) for a, cols in p_c_w.blocks()
              for j in range(cols.shape[1])]
    return sorted(scores, key=lambda t: -t[1])


def feature_for_word(p_c_w: Conditionals, words: list[str], word: str) -> int:
    """The feature a word points to most: argmax_c p(c | w) (case-insensitive)."""
    low = [w.lower() for w in words]
    if word.lower() not in low:
        raise KeyError(word)
    return int(torch.argmax(p_c_w.row(low.index(word.lower()))))


def top_contexts(acts: torch.Tensor, where: list[tuple[int, int]], token_ids: list[list[int]], tokenizer,
                 feature: int, n: int = 5, window: int = 6) -> list[dict]:
    """The n tokens where the feature is most active: {activation, context (with the token in [[ ]])}."""
    col = acts[:, feature]
    out = []
    for i in torch.argsort(col, descending=True)[:n].tolist():
        if col[i] <= 0:
            break
        t, pos = where[i]
        ids = token_ids[t]
        left = tokenizer.decode(ids[max(0, pos - window):pos])
        out.append({"activation": round(float(col[i]), 4),
                    "context": f"{left}[[{tokenizer.decode(ids[pos:pos + 1])}]]{tokenizer.decode(ids[pos + 1:pos + 3])}"})
    return out
