"""`bake tune`: search a recipe's parameters for hooks worth baking (above evaluation: a trial is an
evaluation of the hooked model).

`spec.py` reads the recipe's `tune:` block (the space, the objectives, the constraints), `split.py`
holds every data input's held-out part out of the search, `study.py` runs the Optuna study and
re-measures a picked trial on the held-out part, `report.py` prints the front and the card's section.
"""
