"""Writing the baked folder: the checkpoint, the recipe as run with its artifacts, the manifest.

`rewrite.py` streams the edited checkpoint shard by shard (through bake.files' staging: nothing is
half-written). `standalone.py` makes the folder stand alone: the artifacts the recipe read copied
in, and the recipe as run referring to them. `integrity.py` holds the sha256 manifest that
`verify`, `export` and `push` check (the report itself, bake/publish/report.py, carries it).
"""
