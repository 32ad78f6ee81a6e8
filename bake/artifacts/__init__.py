"""The files a recipe points at, read safely: steering vectors, directions, alphas and SAEs.

`tensors.py` reads `path#key[i, x]` references (safetensors, numpy, torch state dicts without
pickle) and checks their shapes and values. `imports.py` converts vectors made by other tools
(repeng/llama.cpp control vectors, SAE decoder rows, steering-vectors files) into bake's form.
`sae.py` reads and writes SAELens folders.
"""
