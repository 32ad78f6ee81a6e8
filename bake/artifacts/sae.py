"""The one SAE reader (and writer) of the package: SAELens's on-disk format.

A SAELens SAE is a folder with `cfg.json` and `sae_weights.safetensors` (`W_enc [d_in, d_sae]`,
`W_dec [d_sae, d_in]`, `b_enc [d_sae]`, `b_dec [d_in]`, `threshold [d_sae]` for JumpReLU). The
config changed over SAELens versions; all of these read the same:

- v6: `architecture` (standard | topk | jumprelu), `k` (topk), `rescale_acts_by_decoder_norm`,
  `apply_b_dec_to_input`, `normalize_activations`, and `metadata.hook_name`;
- v3-v5: `hook_name` at the top, `activation_fn_str` (relu | topk) with `activation_fn_kwargs.k`;
- older: `hook_point` instead of `hook_name`.

`encode` follows SAELens's forward pass: normalize the input (`constant_norm_rescale`: to norm
sqrt(d_in); `layer_norm`; `none`, and `expected_average_only_in` whose factor SAELens folds into
the weights when it loads a pretrained SAE), subtract `b_dec` when `apply_b_dec_to_input`, then
`x W_enc + b_enc` through ReLU, TopK (ReLU of the k largest) or JumpReLU (ReLU where the
pre-activation exceeds `threshold`). `decode`: `f W_dec + b_dec`, then undo the normalization.
Hook names map onto a model's modules through `hook_site`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BakeError

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
NORMS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
# hook names bake maps onto modules: {suffix: site}; resid_pre L is the output of block L - 1
HOOKS = {"hook_resid_post": "block_out", "hook_resid_pre": "block_out", "hook_mlp_out": "mlp_out",
         "hook_attn_out": "attn_out"}


@dataclass
class SAE:
    W_enc: torch.Tensor        # [d_in, d_sae]
    W_dec: torch.Tensor        # [d_sae, d_in]
    b_enc: torch.Tensor        # [d_sae]
    b_dec: torch.Tensor        # [d_in]
    arch: str = "relu"         # relu | topk | jumprelu
    hook_name: str = ""
    k: int | None = None       # topk
    threshold: torch.Tensor | None = None  # jumprelu [d_sae]
    apply_b_dec_to_input: bool = True
    normalize: str = "none"
    rescale_by_decoder_norm: bool = False  # topk (v6): pre-activations times |W_dec[c]| before the top-k
    extra: dict = field(default_factory=dict)  # everything else in cfg.json, written back unchanged

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def _norm_in(self, x):
        if self.normalize == "constant_norm_rescale":
            c = self.d_in ** 0.5 / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            return x * c, ("scale", c)
        if self.normalize == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            std = (x - mu).std(dim=-1, keepdim=True)
            return (x - mu) / (std + 1e-5), ("ln", mu, std)
        return x, None

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations [..., d_sae] of input x [..., d_in]."""
        x, _ = self._norm_in(x.to(self.W_enc.dtype))
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        """Feature activations from pre-activations."""
        if self.arch == "topk":
            scored = h * self.W_dec.norm(dim=-1) if self.rescale_by_decoder_norm else h
            idx = scored.topk(self.k, dim=-1).indices
            return torch.zeros_like(h).scatter(-1, idx, h.gather(-1, idx).relu())
        if self.arch == "jumprelu":
            return h.relu() * (h > self.threshold).to(h.dtype)
        return h.relu()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.pre(x))

    def decode(self, f: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction from activations f; `x` (the input) undoes an input normalization."""
        out = f @ self.W_dec + self.b_dec
        if self.normalize in ("constant_norm_rescale", "layer_norm"):
            if x is None:
                raise BakeError(f"decoding an SAE with normalize_activations={self.normalize} needs its input")
            _, how = self._norm_in(x.to(out.dtype))
            out = out / how[1] if how[0] == "scale" else out * how[2] + how[1]
        return out

    def directions(self, features: list[int]) -> torch.Tensor:
        """The chosen features' decoder rows as unit columns [d_in, len(features)] (S of the SAE kinds)."""
        rows = self.W_dec[features].double()
        norms = rows.norm(dim=-1, keepdim=True)
        if (norms < 1e-12).any():
            zero = [f for f, n in zip(features, norms.flatten().tolist()) if n < 1e-12]
            raise BakeError(f"SAE features {zero} have a zero decoder row: no direction to steer along")
        return (rows / norms).T.contiguous()

    def cfg(self) -> dict:
        """cfg.json in SAELens v6's layout (architecture names as SAELens spells them)."""
        meta = dict(self.extra.get("metadata") or {})
        meta["hook_name"] = self.hook_name
        out = {k: v for k, v in self.extra.items() if k not in ("metadata",)}
        out.update({"architecture": {"relu": "standard"}.get(self.arch, self.arch), "d_in": self.d_in,
                    "d_sae": self.d_sae, "dtype": "float32", "device": "cpu",
                    "apply_b_dec_to_input": self.apply_b_dec_to_input, "normalize_activations": self.normalize,
                    "reshape_activations": "none", "metadata": meta})
        if self.arch == "topk":
            out.update({"k": self.k, "rescale_acts_by_decoder_norm": self.rescale_by_decoder_norm})
        return out


def _arch(cfg: dict, where: str) -> tuple[str, int | None]:
    a = str(cfg.get("architecture") or "").lower()
    fn = str(cfg.get("activation_fn_str") or cfg.get("activation_fn") or "").lower()
    kw = cfg.get("activation_fn_kwargs") or {}
    if a in ("standard", "relu", "") and fn in ("", "relu"):
        return "relu", None
    if a == "topk" or fn == "topk":
        k = cfg.get("k", kw.get("k"))
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise BakeError(f"{where}: a topk SAE needs a positive integer k (cfg `k` or activation_fn_kwargs.k), "
                            f"got {k!r}")
        return "topk", k
    if a in ("jumprelu", "jump_relu"):
        return "jumprelu", None
    raise BakeError(f"{where}: SAE architecture {a or fn!r} is not supported; bake reads standard (ReLU), topk "
                    "and jumprelu SAEs")


def read(folder: Path, where: str | None = None) -> SAE:
    """An SAE from a SAELens folder. Every problem is a BakeError naming the file."""
    folder = Path(folder)
    where = where or str(folder)
    cfg_path, w_path = folder / CFG, folder / WEIGHTS
    if not cfg_path.is_file() or not w_path.is_file():
        raise BakeError(f"{where}: a SAELens SAE folder holds {CFG} and {WEIGHTS}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BakeError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise BakeError(f"{cfg_path}: expected a JSON object")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        w = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise BakeError(f"{w_path}: cannot read it ({type(e).__name__}: {e})") from None
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in w]
    if missing:
        raise BakeError(f"{w_path}: no {', '.join(missing)} (it holds {', '.join(sorted(w)) or 'nothing'})")
    arch, k = _arch(cfg, where)
    W_enc, W_dec, b_enc, b_dec = (w[n].float() for n in ("W_enc", "W_dec", "b_enc", "b_dec"))
    if W_enc.ndim != 2 or W_dec.shape != W_enc.shape[::-1] or b_enc.shape != (W_enc.shape[1],) \
            or b_dec.shape != (W_enc.shape[0],):
        raise BakeError(f"{w_path}: shapes W_enc {list(W_enc.shape)}, W_dec {list(W_dec.shape)}, b_enc "
                        f"{list(b_enc.shape)}, b_dec {list(b_dec.shape)}; expected [d_in, d_sae], [d_sae, d_in], "
                        "[d_sae], [d_in]")
    for n, t in (("d_in", W_enc.shape[0]), ("d_sae", W_enc.shape[1])):
        if n in cfg and cfg[n] != t:
            raise BakeError(f"{where}: cfg.json says {n} = {cfg[n]} but the weights have {t}")
    if arch == "topk" and k > W_enc.shape[1]:
        raise BakeError(f"{where}: k = {k} exceeds d_sae = {W_enc.shape[1]}")
    threshold = None
    if arch == "jumprelu":
        if "threshold" in w:
            threshold = w["threshold"].float()
        elif "log_threshold" in w:
            threshold = w["log_threshold"].float().exp()
        if threshold is None or threshold.shape != b_enc.shape:
            raise BakeError(f"{w_path}: a jumprelu SAE needs `threshold` [d_sae]")
    for n, t in (("W_enc", W_enc), ("W_dec", W_dec), ("b_enc", b_enc), ("b_dec", b_dec)):
        if not torch.isfinite(t).all():
            raise BakeError(f"{w_path}: {n} holds NaN or inf")
    norm = str(cfg.get("normalize_activations") or "none")
    if norm not in NORMS:
        raise BakeError(f"{where}: normalize_activations {norm!r}; SAELens defines {', '.join(NORMS)}")
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    hook = cfg.get("hook_name") or meta.get("hook_name") or cfg.get("hook_point") or ""
    known = {"architecture", "activation_fn_str", "activation_fn_kwargs", "k", "d_in", "d_sae", "hook_name",
             "hook_point", "apply_b_dec_to_input", "normalize_activations", "rescale_acts_by_decoder_norm"}
    return SAE(W_enc, W_dec, b_enc, b_dec, arch, str(hook), k, threshold,
               bool(cfg.get("apply_b_dec_to_input", True)), norm, bool(cfg.get("rescale_acts_by_decoder_norm", False)),
               {k2: v for k2, v in cfg.items() if k2 not in known})


def write(sae: SAE, folder: Path) -> Path:
    """Save in SAELens v6's layout (what `SAE.load_from_disk` reads)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_enc": sae.b_enc, "b_dec": sae.b_dec}
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(folder / WEIGHTS))
    (folder / CFG).write_text(json.dumps(sae.cfg(), indent=2) + "\n")
    return folder


def load(spec: str, base: Path = Path(".")) -> SAE:
    """From a folder, or `hf:owner/repo[/subfolder][@revision]` on the Hugging Face Hub."""
    if spec.startswith("hf:"):
        return read(_from_hub(spec[3:]), spec)
    p = Path(spec).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.is_dir():
        raise BakeError(f"SAE {spec!r}: no such folder ({p}); a Hub SAE is hf:owner/repo[/subfolder]")
    return read(p, spec)


def _from_hub(ref: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    ref, _, rev = ref.partition("@")
    parts = ref.strip("/").split("/")
    if len(parts) < 2:
        raise BakeError(f"SAE hf:{ref}: expected hf:owner/repo[/subfolder][@revision]")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    pattern = f"{sub}/" if sub else ""
    try:
        local = snapshot_download(repo, revision=rev or None, allow_patterns=[pattern + CFG, pattern + WEIGHTS])
    except (RepositoryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        raise BakeError(f"SAE hf:{ref}: cannot fetch it from the Hugging Face Hub ({type(e).__name__}: {e})") from None
    return Path(local) / sub


def hook_site(hook_name: str, n_layers: int) -> tuple[int, str]:
    """(block, site) of a TransformerLens hook name: `blocks.L.hook_resid_post` -> (L, block_out),
    `blocks.L.hook_resid_pre` -> (L - 1, block_out), `blocks.L.hook_mlp_out` -> (L, mlp_out),
    `blocks.L.hook_attn_out` -> (L, attn_out)."""
    m = re.fullmatch(r"blocks\.(\d+)\.(hook_\w+)", hook_name or "")
    if not m or m.group(2) not in HOOKS:
        raise BakeError(f"SAE hook {hook_name!r}: bake maps blocks.L.{{{', '.join(HOOKS)}}} onto a model's modules")
    layer = int(m.group(1)) - (m.group(2) == "hook_resid_pre")
    if layer < 0:
        raise BakeError(f"SAE hook {hook_name!r}: the residual stream before block 0 is the embeddings' output, "
                        "which bake does not hook; use an SAE on a later block")
    if layer >= n_layers:
        raise BakeError(f"SAE hook {hook_name!r}: the model has {n_layers} blocks")
    return layer, HOOKS[m.group(2)]
