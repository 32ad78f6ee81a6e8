"""Exports of a baked folder, each verified in its own runtime.

One module per format, registered in `EXPORTERS` with one interface (`Exporter`): `check` before
baking, the default output path, `export` (write and verify), and what an earlier output it may
replace. `onnx.py` (torch.onnx + onnxruntime, genai config) and `gguf.py` (llama.cpp's converter or
a patch of the source GGUF, verified with llama.cpp). `serving.py` says which stock runtimes serve
a checkpoint unchanged.
"""
