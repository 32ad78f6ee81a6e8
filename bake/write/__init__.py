"""Writing output safely: the checkpoint, its report and its manifest.

`rewrite.py` streams the edited checkpoint shard by shard. `staging.py` is how bake writes
anything: lock, stage into a hidden sibling, check, rename; `replacing()` for bake's own files.
`integrity.py` holds the report file and the sha256 manifest that `verify`, `export` and `push`
check. `interrupt.py` makes every signal unwind, so nothing half-written is left.
"""
