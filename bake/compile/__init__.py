"""Compiling a recipe into a plan, and the math it is made of.

`builder.py` turns a recipe into a `Plan` on one checkpoint, through each kind's compile step
(`bake.kinds`), and raises every refusal before anything is written. `planning.py` holds the
plan's plain data (ops per tensor, hooks per module). `ops.py` is the op table: each fold op with
its hook twin and description, over the pure tensor functions in `fold.py`. `hooks.py` attaches a
plan's hooks: the specification the bake must reproduce.
"""
