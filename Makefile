# hsikit — set-up and everyday commands. `make demo` and `make test` bootstrap .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= demo_output

.PHONY: demo test sample bench clean install qgis-plugin

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch==2.14.1/torchvision==0.29.1 are pinned here (not in pyproject) because this pair installs from
# local disk on our machines; any torch in the pyproject range works for users.
$(STAMP): pyproject.toml $(BIN)/python
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	mkdir -p $(OUT)
	$(BIN)/hsikit classify sample_data/sample_scene.tif --model sample_data/sample_model.safetensors \
		-o $(OUT)/sample_classes.tif --quicklook --overwrite
	@echo ""
	@echo "Outputs written to $(OUT)/:"
	@ls -1 $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra tests

sample: $(STAMP)
	$(BIN)/python sample_data/generate.py

bench: $(STAMP)
	$(BIN)/python bench/bench_tiled.py --sizes 1024 4096 8192

# The QGIS Processing provider as an installable plugin zip (Plugins > Install from ZIP). It bundles hsikit's
# option declarations, hence the venv.
qgis-plugin: $(STAMP)
	$(BIN)/python qgis/build_plugin.py --out dist/hsikit_qgis.zip

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info
