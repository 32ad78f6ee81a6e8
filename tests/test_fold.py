"""Property tests of the fold ops in bake/compile/fold.py: hook math == folded math, in float64.

Every fold has a hook twin (the specification). For random shapes and values we check that running
the original module and then the hook gives the same activations as running the module with the
folded weights, for every weight layout bake folds into: Linear `[out, in]`, GPT-2 Conv1D
`[in, out]`, embeddings `[vocab, d]`, biases, and fused MoE expert tensors `[E, d, inter]`.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bake.compile import fold

F64 = torch.float64
TOL = 1e-10

dims = st.integers(min_value=1, max_value=9)
batch_shapes = st.lists(st.integers(min_value=1, max_value=4), min_size=0, max_size=2).map(tuple)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


def alphas(g, n: int) -> torch.Tensor:
    """AURA-like alphas: mostly in [0, 2), with some exact zeros and ones mixed in."""
    a = torch.rand(n, generator=g, dtype=F64) * 2
    pick = torch.rand(n, generator=g, dtype=F64)
    a[pick < 0.2] = 0.0
    a[(pick >= 0.2) & (pick < 0.3)] = 1.0
    return a


def unit(g, d: int) -> torch.Tensor:
    r = randn(g, d)
    while r.norm() < 1e-3:  # practically never; keeps the direction well defined
        r = randn(g, d)
    return r / r.norm()


def assert_close(got: torch.Tensor, want: torch.Tensor, tol: float = TOL):
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype == F64, (got.dtype, want.dtype)
    err = (got - want).abs().max().item() if got.numel() else 0.0
    assert err <= tol, f"max abs difference {err:.3g} > {tol:g}"


def projector(r: torch.Tensor) -> torch.Tensor:
    """The explicit matrix I - r r^T (an independent reference for project_out)."""
    return torch.eye(r.numel(), dtype=F64) - torch.outer(r, r)


# --- hook math == folded math ----------------------------------------------------------------


@SETTINGS
@given(batch=batch_shapes, d_in=dims, d_out=dims, seed=seeds)
def test_scale_linear_weight_and_bias_equal_hook(batch, d_in, d_out, seed):
    g = gen(seed)
    x, w, b, a = randn(g, *batch, d_in), randn(g, d_out, d_in), randn(g, d_out), alphas(g, d_out)
    hooked = fold.hook_scale(x @ w.T + b, a)
    folded = x @ fold.scale_units(w, a, 0).T + fold.scale_units(b, a, 0)
    assert_close(folded, hooked)
    # and the fold really scales rows: row j is alpha[j] * row j
    assert_close(fold.scale_units(w, a, 0), torch.diag(a) @ w)


@SETTINGS
@given(batch=batch_shapes, d_in=dims, d_out=dims, seed=seeds)
def test_scale_conv1d_axis1_equals_hook(batch, d_in, d_out, seed):
    g = gen(seed)
    x, w, b, a = randn(g, *batch, d_in), randn(g, d_in, d_out), randn(g, d_out), alphas(g, d_out)
    hooked = fold.hook_scale(x @ w + b, a)  # GPT-2 Conv1D: y = x W + b, W [in, out]
    folded = x @ fold.scale_units(w, a, 1) + fold.scale_units(b, a, 0)
    assert_close(folded, hooked)
    assert_close(fold.scale_units(w, a, 1), w @ torch.diag(a))


@SETTINGS
@given(vocab=st.integers(2, 30), d=dims, n_ids=st.integers(1, 12), seed=seeds)
def test_embedding_project_out_and_scale_equal_hook(vocab, d, n_ids, seed):
    g = gen(seed)
    emb, r, a = randn(g, vocab, d), unit(g, d), alphas(g, d)
    ids = torch.randint(0, vocab, (n_ids,), generator=g)
    assert_close(fold.project_out(emb, r, 1)[ids], fold.hook_project_out(emb[ids], r))
    assert_close(fold.project_out(emb, r, 1), emb @ projector(r))
    # AURA on an Embedding module scales its d output units: axis 1
    assert_close(fold.scale_units(emb, a, 1)[ids], fold.hook_scale(emb[ids], a))


@SETTINGS
@given(batch=batch_shapes, d=dims, d_in=dims, seed=seeds)
def test_project_out_linear_axis0_with_bias_equals_hook(batch, d, d_in, seed):
    g = gen(seed)
    x, w, b, r = randn(g, *batch, d_in), randn(g, d, d_in), randn(g, d), unit(g, d)
    hooked = fold.hook_project_out(x @ w.T + b, r)
    folded = x @ fold.project_out(w, r, 0).T + fold.project_out(b, r, 0)
    assert_close(folded, hooked)
    assert_close(fold.project_out(w, r, 0), projector(r) @ w)
    assert_close(fold.project_out(b, r, 0), b - (b @ r) * r)


@SETTINGS
@given(batch=batch_shapes, d=dims, d_in=dims, seed=seeds)
def test_project_out_conv1d_axis1_with_bias_equals_hook(batch, d, d_in, seed):
    g = gen(seed)
    x, w, b, r = randn(g, *batch, d_in), randn(g, d_in, d), randn(g, d), unit(g, d)
    hooked = fold.hook_project_out(x @ w + b, r)  # GPT-2 c_proj writes the residual: W [in, d]
    folded = x @ fold.project_out(w, r, 1) + fold.project_out(b, r, 0)
    assert_close(folded, hooked)


@SETTINGS
@given(batch=batch_shapes, d=dims, seed=seeds, scale=st.floats(-8, 8, allow_nan=False))
def test_add_vector_on_bias_equals_hook_add(batch, d, seed, scale):
    g = gen(seed)
    d_in = d + 1
    x, w, b, v = randn(g, *batch, d_in), randn(g, d, d_in), randn(g, d), randn(g, d)
    vec = scale * v
    hooked = fold.hook_add(x @ w.T + b, vec)
    folded = x @ w.T + fold.add_vector(b, vec)
    assert_close(folded, hooked)
    # a new zero bias (the slot bake creates) plus v gives exactly the hook on a bias-free Linear
    assert_close(x @ w.T + fold.add_vector(torch.zeros(d, dtype=F64), vec), fold.hook_add(x @ w.T, vec))


@SETTINGS
@given(n_exp=st.integers(1, 5), d=dims, inter=dims, tokens=st.integers(1, 6), seed=seeds)
def test_fused_experts_3d_axis1_equal_per_expert_hook(n_exp, d, inter, tokens, seed):
    g = gen(seed)
    w = randn(g, n_exp, d, inter)  # fused down_proj: expert e maps inter -> d with W[e] [d, inter]
    h = randn(g, n_exp, tokens, inter)
    r, a = unit(g, d), alphas(g, d)
    gates = torch.rand(n_exp, tokens, 1, generator=g, dtype=F64)
    w_abl, w_scl = fold.project_out(w, r, 1), fold.scale_units(w, a, 1)
    for e in range(n_exp):
        y = h[e] @ w[e].T
        assert_close(h[e] @ w_abl[e].T, fold.hook_project_out(y, r))
        assert_close(h[e] @ w_scl[e].T, fold.hook_scale(y, a))
    assert_close(w_abl, torch.einsum("ij,ejk->eik", projector(r), w))
    # the MoE block output is a gated sum of expert outputs; ablation commutes with it
    moe = lambda ww: (gates * torch.einsum("etk,edk->etd", h, ww)).sum(0)  # noqa: E731
    assert_close(moe(w_abl), fold.hook_project_out(moe(w), r))


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple), data=st.data(), seed=seeds)
def test_scale_and_project_any_axis_match_reference(shape, data, seed):
    axis = data.draw(st.integers(0, len(shape) - 1))
    g = gen(seed)
    w, a, r = randn(g, *shape), alphas(g, shape[axis]), unit(g, shape[axis])
    ref_scale = (w.movedim(axis, -1) * a).movedim(-1, axis)
    ref_proj = torch.tensordot(w.movedim(axis, -1), projector(r), dims=1).movedim(-1, axis)
    assert_close(fold.scale_units(w, a, axis), ref_scale)
    assert_close(fold.project_out(w, r, axis), ref_proj)


def test_folds_keep_the_weight_dtype():
    w = torch.randn(4, 3, dtype=torch.float64)
    a32 = torch.rand(4, dtype=torch.float32)
    assert fold.scale_units(w, a32, 0).dtype == torch.float64
    assert fold.project_out(w, torch.tensor([1.0, 0, 0, 0], dtype=torch.float32), 0).dtype == torch.float64
    w32 = w.to(torch.float32)
    assert fold.scale_units(w32, a32.double(), 0).dtype == torch.float32
    assert fold.add_vector(torch.zeros(4, dtype=torch.bfloat16), torch.ones(4, dtype=F64)).dtype == torch.bfloat16


# --- identities ------------------------------------------------------------------------------


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple), data=st.data(), seed=seeds)
def test_alpha_one_is_identity(shape, data, seed):
    axis = data.draw(st.integers(0, len(shape) - 1))
    g = gen(seed)
    w = randn(g, *shape)
    ones = torch.ones(shape[axis], dtype=F64)
    assert torch.equal(fold.scale_units(w, ones, axis), w)
    h = randn(g, 3, shape[axis])
    assert torch.equal(fold.hook_scale(h, ones), h)
    mu = randn(g, shape[axis])
    assert_close(fold.hook_scale(h, ones, mu), h)  # (1 - 1) * mu adds nothing
    assert_close(fold.shift_units(w.movedim(axis, -1)[(0,) * (len(shape) - 1)], ones, mu),
                 w.movedim(axis, -1)[(0,) * (len(shape) - 1)])


@SETTINGS
@given(d=dims, seed=seeds)
def test_zero_steering_is_identity(d, seed):
    g = gen(seed)
    b, v, h = randn(g, d), randn(g, d), randn(g, 2, 3, d)
    assert torch.equal(fold.add_vector(b, 0.0 * v), b)
    assert torch.equal(fold.hook_add(h, 0.0 * v), h)
    # and a nonzero scale is not an identity (the check above can fail)
    assert not torch.equal(fold.add_vector(b, 1.0 * v + 1.0), b)


@SETTINGS
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple), data=st.data(), seed=seeds)
def test_project_out_idempotent_and_orthogonal(shape, data, seed):
    axis = data.draw(st.integers(0, len(shape) - 1))
    g = gen(seed)
    w, r = randn(g, *shape), unit(g, shape[axis])
    once = fold.project_out(w, r, axis)
    twice = fold.project_out(once, r, axis)
    assert_close(twice, once)
    assert_close(once.movedim(axis, -1) @ r, torch.zeros(once.movedim(axis, -1).shape[:-1], dtype=F64))
    # what was removed is exactly the component along r
    removed = (w - once).movedim(axis, -1)
    assert_close(removed, (w.movedim(axis, -1) @ r).unsqueeze(-1) * r)
    h = randn(g, 4, shape[axis])
    assert_close(fold.hook_project_out(fold.hook_project_out(h, r), r), fold.hook_project_out(h, r))
    assert_close(fold.hook_project_out(h, r) @ r, torch.zeros(4, dtype=F64))


def test_project_out_removes_a_component_that_is_there():
    r = torch.tensor([0.6, 0.8], dtype=F64)
    w = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=F64)  # rows along / across r, axis 1
    out = fold.project_out(w, r, 1)
    assert_close(out[0], torch.zeros(2, dtype=F64))
    assert_close(out[1], torch.tensor([1 - 0.36, -0.48], dtype=F64))


# --- composition order -----------------------------------------------------------------------


@SETTINGS
@given(d=dims, seed=seeds, scale=st.floats(-4, 4, allow_nan=False))
def test_steer_then_ablate_vs_ablate_then_steer_on_a_bias(d, seed, scale):
    g = gen(seed)
    v, r = scale * randn(g, d), unit(g, d)
    zero = torch.zeros(d, dtype=F64)
    steer_then_ablate = fold.project_out(fold.add_vector(zero, v), r, 0)
    assert_close(steer_then_ablate, projector(r) @ v)
    ablate_then_steer = fold.add_vector(fold.project_out(zero, r, 0), v)
    assert_close(ablate_then_steer, v)
    # with an existing bias b: (I - r r^T)(b + v), and (I - r r^T) b + v
    b = randn(g, d)
    assert_close(fold.project_out(fold.add_vector(b, v), r, 0), projector(r) @ (b + v))
    assert_close(fold.add_vector(fold.project_out(b, r, 0), v), projector(r) @ b + v)


@SETTINGS
@given(batch=batch_shapes, d=dims, d_in=dims, seed=seeds)
def test_composed_folds_equal_composed_hooks_in_recipe_order(batch, d, d_in, seed):
    """scale (AURA), then add (steer), then project_out (ablate) on one Linear, as compile.Op applies them."""
    g = gen(seed)
    x, w, b = randn(g, *batch, d_in), randn(g, d, d_in), randn(g, d)
    a, v, r = alphas(g, d), randn(g, d), unit(g, d)
    y = x @ w.T + b
    hooked = fold.hook_project_out(fold.hook_add(fold.hook_scale(y, a), v), r)
    w2 = fold.project_out(fold.scale_units(w, a, 0), r, 0)
    b2 = fold.project_out(fold.add_vector(fold.scale_units(b, a, 0), v), r, 0)
    assert_close(x @ w2.T + b2, hooked)
    # ablate before steer: the steering vector survives whole
    hooked2 = fold.hook_add(fold.hook_project_out(y, r), v)
    b3 = fold.add_vector(fold.project_out(b, r, 0), v)
    assert_close(x @ fold.project_out(w, r, 0).T + b3, hooked2)
    assert_close((x @ fold.project_out(w, r, 0).T + b3) @ r, torch.full(y.shape[:-1], float(v @ r), dtype=F64))


# --- mean shift ------------------------------------------------------------------------------


@SETTINGS
@given(batch=batch_shapes, d_in=dims, d_out=dims, seed=seeds)
def test_shift_units_equals_hook_scale_with_mu(batch, d_in, d_out, seed):
    g = gen(seed)
    x, w, b = randn(g, *batch, d_in), randn(g, d_out, d_in), randn(g, d_out)
    a, mu = alphas(g, d_out), randn(g, d_out)
    hooked = fold.hook_scale(x @ w.T + b, a, mu)
    folded = x @ fold.scale_units(w, a, 0).T + fold.shift_units(fold.scale_units(b, a, 0), a, mu)
    assert_close(folded, hooked)
    assert_close(fold.shift_units(b, a, mu), b + (1 - a) * mu)
    # Conv1D layout too
    wc = w.T.contiguous()
    folded_c = x @ fold.scale_units(wc, a, 1) + fold.shift_units(fold.scale_units(b, a, 0), a, mu)
    assert_close(folded_c, hooked)
    # alpha = 0 collapses every unit to its mean
    zeros = torch.zeros(d_out, dtype=F64)
    collapsed = x @ fold.scale_units(w, zeros, 0).T + fold.shift_units(fold.scale_units(b, zeros, 0), zeros, mu)
    assert_close(collapsed, mu.expand_as(collapsed).clone())
