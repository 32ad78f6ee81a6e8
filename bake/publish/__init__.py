"""Publishing: the model card and the Hub.

`card.py` renders README.md (Hub metadata, what changed, verification, exports, serving) from the
report; `hub.py` is `bake push` (one commit through huggingface_hub, refused for a failed or changed
folder).
"""
