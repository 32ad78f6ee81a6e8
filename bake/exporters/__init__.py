"""Exports of a baked folder, each verified in its own runtime.

One module per format, each with one `Exporter` registered with `@register` (`base.py`: `check`
before baking, `options`, the default output, `write`, `verify`, and what it owns besides: its
`bake export` options, its model-card lines, its runtime's serving notes), found by name through
`base.get` (`base.formats()` lists them).
`onnx.py`: torch.onnx, verified in onnxruntime, with a genai config; `gguf.py`: llama.cpp's
converter or a patch of the source GGUF, verified with llama.cpp. `serving.py` says which stock runtimes serve
a checkpoint unchanged.
"""
