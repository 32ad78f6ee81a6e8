"""The typed report (bake/publish/report.py) and the exporter registry (bake/exporters/base.py), on hand-made
inputs."""

from __future__ import annotations

import json

import pytest

from bake.errors import BakeError
from bake.exporters import base as exporters
from bake.publish.report import REPORT, Report

MINIMAL = {"model": {"spec": "m", "family": "llama"}, "steps": [{"kind": "steer", "index": 0}], "edits": [],
           "verification": {"status": "passed", "failures": []}}


def test_round_trip_keeps_the_json_object(tmp_path):
    data = {**MINIMAL, "dtype": "float32", "files": {"config.json": "ab"}, "extra_field": [1, 2]}
    (tmp_path / REPORT).write_text(json.dumps(data))
    r = Report.read(tmp_path)
    assert r.dtype == "float32" and r["extra_field"] == [1, 2] and "exports" not in r and r.get("seconds") is None
    r.seconds = 1.5
    r.write(tmp_path)
    assert json.loads((tmp_path / REPORT).read_text()) == {**data, "seconds": 1.5}  # fields never set stay absent


@pytest.mark.parametrize("data,named", [
    ([1, 2], "its top level"),
    ({**MINIMAL, "steps": {}}, "steps"),
    ({k: v for k, v in MINIMAL.items() if k != "verification"}, "verification"),
    ({**MINIMAL, "files": ["config.json"]}, "files"),
    ({**MINIMAL, "exports": {"x.gguf": "passed"}}, "exports"),
])
def test_foreign_reports_are_refused_naming_the_field(tmp_path, data, named):
    (tmp_path / REPORT).write_text(json.dumps(data))
    with pytest.raises(BakeError, match=f"not a bake report \\(no valid {named}\\)"):
        Report.read(tmp_path)


def test_missing_and_corrupt(tmp_path):
    assert Report.read(tmp_path, required=False) is None
    with pytest.raises(BakeError, match="no bake_report.json"):
        Report.read(tmp_path)
    (tmp_path / REPORT).write_bytes(b"\xff{")
    with pytest.raises(BakeError, match="corrupt report"):
        Report.read(tmp_path)


def test_record_export_replaces_the_manifest_under_its_path_and_failures_name_it():
    r = Report(**MINIMAL, files={"config.json": "c", "onnx/model.onnx": "old", "onnx/gone.txt": "g"})
    r.record_export({"format": "onnx", "path": "onnx", "status": "failed", "failures": ["logits differ"]},
                    {"onnx/model.onnx": "new"})
    assert r.files == {"config.json": "c", "onnx/model.onnx": "new"}
    assert r.failures() == ["onnx export onnx failed verification: logits differ"]
    r.verification["status"], r.verification["failures"] = "failed", ["top-1 0.5"]
    assert r.failures()[0] == "verification failed: top-1 0.5"
    older = Report(**MINIMAL)  # baked before manifests: nothing to update
    older.record_export({"format": "gguf", "path": "x.gguf", "status": "passed"}, {"x.gguf": "h"})
    assert older.files is None and list(older.exports) == ["x.gguf"]


def test_every_format_has_an_exporter(tmp_path):
    for fmt in exporters.formats():
        ex = exporters.get(fmt)
        assert isinstance(ex, exporters.Exporter) and ex.name == fmt
    assert exporters.get("onnx").default_output(tmp_path, "m", {}) == tmp_path / "onnx"
    opts = {"type": "q8_0", "source": None}
    assert exporters.get("gguf").default_output(tmp_path, "m", opts) == tmp_path / "m.Q8_0.gguf"
    with pytest.raises(BakeError, match="unknown export format 'tflite'; expected onnx or gguf"):
        exporters.get("tflite")


def test_apply_output_leads_with_verification_and_lists_tensors_only_when_verbose(tmp_path, capsys):
    import torch
    import yaml

    from bake.cli import main
    from tiny import COMMON, build

    src = build("llama", tmp_path / "src")
    torch.save(torch.ones(COMMON["hidden_size"]), tmp_path / "v.pt")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(src), "verify": {"generate_tokens": 2}, "interventions": [
        {"kind": "ablate", "direction": str(tmp_path / "v.pt")}]}))
    for verbose in (False, True):
        args = ["apply", str(recipe), "-o", str(tmp_path / "out"), "--force"] + (["--verbose"] if verbose else [])
        assert main(args) == 0
        text = capsys.readouterr().out
        assert text.index("verification: PASSED") < text.index("interventions:") < text.index("wrote ")
        rows = [line for line in text.splitlines() if line.startswith("  model.layers.0.self_attn.o_proj.weight")]
        assert len(rows) == (1 if verbose else 0)
        assert ("listed by --verbose" in text) != verbose
