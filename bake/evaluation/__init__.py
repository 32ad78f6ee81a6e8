"""Measuring what a bake does to behaviour and quality (`bake eval`, issue 13).

`metrics.py` holds the pure functions every suite reports with (bootstrap confidence intervals,
paired ratios, KL divergence from logits, perplexity, refusal-marker matching at several reply
lengths, the Pareto front of a sweep); `sweep.py` finds and sets the numeric recipe key a sweep
varies. Each is tested on hand-made inputs with known answers (`tests/test_evaluation.py`).
`suites.py`, `scorers.py`, `subjects.py`, `run.py`, `generate.py` and `report.py` make `bake eval`;
`coverage.py` bakes every decoder-only type transformers ships, per kind (the families table).
"""
