"""The compiler's vocabulary: the math a bake is made of and the plan it produces.

`fold.py` holds the pure tensor functions (each fold with its hook twin); `ops.py` is the op
table over them (fold op, hook op, description); `planning.py` the plan's plain data (ops per
tensor, hooks per module); `hooks.py` attaches a plan's hooks: the specification the bake must
reproduce. Turning a recipe into a plan is the next stage up, bake.planner.
"""
