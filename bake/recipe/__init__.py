"""The recipe and what it points at.

`schema.py` validates a `recipe.yaml` (pydantic; errors name the YAML path) into a `Recipe`; the
per-kind fields come from the kinds registry (`bake.kinds`). `artifacts.py` reads the files a
recipe names (vectors, directions, alphas; `path#key[i, x]`) safely and checks their shapes and
values. `imports.py` converts steering vectors made by other tools (repeng/llama.cpp control
vectors, SAE decoder rows, steering-vectors files) into bake's form.
"""
