"""How bake touches the file system, for every stage: nothing here knows about models.

`staging.py` is how bake writes anything: lock, stage into a hidden sibling, check, rename; the
output policy (a run's inputs are never written; `--force` replaces only what the same command
wrote), sealed cache entries and file hashes. `tempdirs.py` owns bake's temporary folders (locked
while in use, swept when their process is gone). `interrupt.py` makes every signal unwind, so
nothing half-written is left; `redact.py` masks secrets in everything a command prints.
"""
