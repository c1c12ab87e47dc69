# ptc: one place for the commands the README, CI and developers use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench pcaps kafka-up kafka-down kafka-status clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## a virtualenv with ptc and the test tools

demo: setup  ## decode the bundled capture of encapsulated probes to stdout
	$(BIN)/ptc replay pcaps/encap.pcap --tts-shift 18 --output -

test: setup lint  ## every test, the real Kafka broker ones included
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup  ## decode speed against a per-field struct.unpack_from decoder
	$(BIN)/python bench/bench_decode.py

pcaps: setup  ## rebuild the bundled captures in pcaps/
	$(BIN)/python scripts/make_pcaps.py

kafka-up:
	scripts/kafka.sh up

kafka-down:
	scripts/kafka.sh down

kafka-status:
	scripts/kafka.sh status

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
