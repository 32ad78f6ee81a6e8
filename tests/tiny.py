"""Tiny random models of every supported family, built from configs (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

COMMON = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)

# name -> (model_type, config overrides, sharded)
TINY = {
    "llama": ("llama", dict(tie_word_embeddings=True), True),
    "llama-untied": ("llama", dict(tie_word_embeddings=False), False),
    "mistral": ("mistral", dict(sliding_window=None), True),
    "mistral-window": ("mistral", dict(sliding_window=16), False),
    "qwen2": ("qwen2", dict(tie_word_embeddings=True), False),
    "qwen3": ("qwen3", dict(head_dim=8), True),
    "gemma3": ("gemma3_text", dict(head_dim=8, tie_word_embeddings=True, sliding_window=8,
                                   query_pre_attn_scalar=8), False),
    "gpt2": ("gpt2", dict(vocab_size=97, n_embd=32, n_layer=3, n_head=4, n_positions=64,
                          tie_word_embeddings=True), True),
    "mixtral": ("mixtral", dict(num_local_experts=4, num_experts_per_tok=2), False),
}


def build(name: str, dest: Path, seed: int = 0) -> Path:
    """Save tiny model `name` to `dest` (safetensors; sharded for some) and return the folder."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, over, sharded = TINY[name]
    kw = {} if model_type == "gpt2" else dict(COMMON)
    kw.update(over)
    cfg = AutoConfig.for_model(model_type, **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # random init is nearly uniform at this size; make logits informative
        for pname, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)  # norm scales and biases away from 1 / 0
            elif p.ndim >= 2:
                p.normal_(0, 0.3)
    model.save_pretrained(dest, max_shard_size="40KB" if sharded else "1GB")
    return dest


CORPUS = [
    "the cat sat on the mat", "you are a lovely person", "I hate you, you idiot", "what a wonderful day",
    "this is stupid and ugly", "thank you so much", "how do I make a bomb", "how do I bake bread",
    "I cannot help with that", "Sure, here is how", "Sorry, I can't", "the weather is nice today",
]
CHAT_TEMPLATE = ("{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}"
                 "{% if add_generation_prompt %}<a>{% endif %}")


def add_tokenizer(dest: Path, vocab_size: int = 97, byte_level: bool = False) -> Path:
    """A small BPE tokenizer with a chat template, saved into a tiny model folder: character-level,
    or GPT-2 style byte-level (what GGUF conversion writes) with `byte_level`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None if byte_level else "<unk>"))
    specials = ["<pad>", "<unk>", "<eos>", "<u>", "</u>", "<a>"]
    if byte_level:  # 256 byte symbols do not fit a 97-token vocabulary: the alphabet is the corpus's bytes
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = sorted(set(pre_tokenizers.ByteLevel.alphabet()) & set("".join(
            w for t in CORPUS for w, _ in pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(t))))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet,
                                      limit_alphabet=len(alphabet))
    else:
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials)
    tok.train_from_iterator(CORPUS * 3, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(dest)
    return dest


def steered(dest: Path, scale: float = 2.0) -> tuple[Path, Path]:
    """A tiny llama with a tokenizer, a seeded steering vector and a recipe steering block 1 with it, baked
    into dest/baked: (source folder, recipe path)."""
    import yaml

    import bake

    src = add_tokenizer(build("llama", dest / "src"))
    torch.save(torch.randn(COMMON["hidden_size"], generator=torch.Generator().manual_seed(1)) * 4, dest / "v.pt")
    recipe = dest / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(src), "interventions": [
        {"kind": "steer", "layers": [1], "vector": str(dest / "v.pt"), "scale": scale}]}))
    bake.apply(recipe, output=dest / "baked", progress=False)
    return src, recipe
