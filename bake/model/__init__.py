"""The input model: where it comes from and how it is read.

`source.py` resolves `model:` (builtin, folder, .gguf, Hub id) to a `Checkpoint` (config, tensor
names and shapes from safetensors headers, no weights). `config.py` validates and reads the sizes
in config.json. `loading.py` loads models and tokenizers (never running a checkpoint's code unless
asked), builds the probe prompts and checks memory. `keys.py` maps a model's parameters onto the
checkpoint's keys through transformers' own save path; `skeleton.py` builds a model on the meta
device and fills one submodule at a time from the checkpoint; `streaming.py` runs a model whose
modules read their weights from disk when they run, so memory stays bounded by a module.
`tiny.py` shrinks a config and builds the tiny random models that probes and tests run.
"""
