"""Writing output safely: the checkpoint, its report and its manifest.

`rewrite.py` streams the edited checkpoint shard by shard (through bake.files' staging: nothing is
half-written). `report.py` is the report a bake writes; `integrity.py` holds the report file and
the sha256 manifest that `verify`, `export` and `push` check.
"""
