# Two commands do all set-up on a fresh machine:
#   make demo   install, then run the whole system on embedded defaults
#   make test   install, then run lint (ruff, the import contracts) and the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint install clean

# constraints.txt pins every package to a set known to install and import together
# (pip otherwise backtracks for a long time between boto3/botocore and aiobotocore).
$(BIN)/asd: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(BIN)/asd

install: $(BIN)/asd

demo: install
	$(BIN)/asd demo $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check asd_core jobs tests bench
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) asd-demo .pytest_cache
