"""Publishing: the report, the model card and the Hub.

`report.py` is bake_report.json as one typed object (the plan's summary, the verification, each
export, the manifest); `card.py` renders README.md (Hub metadata, what changed, verification, exports, serving) from the
report; `hub.py` is `bake push` (one commit through huggingface_hub, refused for a failed or changed
folder).
"""
