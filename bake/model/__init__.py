"""The input model: where it comes from and how it is read.

`source.py` resolves `model:` (builtin, folder, .gguf, Hub id) to a `Checkpoint` (config, tensor
names and shapes from safetensors headers, no weights). `config.py` validates and reads the sizes
in config.json. `loading.py` loads models and tokenizers (never running a checkpoint's code unless
asked), builds the probe prompts and checks memory. `streaming.py` runs a model whose modules read
their weights from disk when they run, so memory stays bounded by a module.
"""
