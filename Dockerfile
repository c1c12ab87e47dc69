# ptc collect in a container, next to a router: see docs/deploy.md.
#
#   docker build -t ptc .
#   docker run -d --name ptc --network host --cap-drop ALL --cap-add NET_RAW \
#       -e PTC_IFACE=eth1 -e PTC_BROKERS=kafka1:9092,kafka2:9092 ptc
#
# Configured by the environment: PTC_IFACE and PTC_BROKERS (required), and any other
# option of `ptc collect` as PTC_<OPTION> (PTC_TOPIC, PTC_WORKERS, PTC_TTS_SHIFT, ...).
# Arguments after the image name are appended to `ptc collect`.
#
# Runs as the unprivileged user ptc (uid 10001). The only privilege it needs is
# CAP_NET_RAW, which the interpreter holds as a file capability: the container must
# have NET_RAW in its capability set, and must not set no-new-privileges
# (Kubernetes: allowPrivilegeEscalation: false), which makes the kernel ignore it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The Rust toolchain of the build stage (native/Cargo.toml's rust-version or later); never in the runtime image.
ARG RUST_IMAGE=rust:1.87-slim-bookworm

# ---- rust: where the build stage takes its toolchain from (rustup, cargo, rustc) ----
FROM ${RUST_IMAGE} AS rust

# ---- build: a wheel of the repo with the compiled engine, installed with its dependencies into /opt/venv ----
FROM ${PYTHON_IMAGE} AS build
# Extras of pt-collector to install: zstd (cramjam) gives --compression snappy, lz4, zstd.
ARG EXTRAS=zstd
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH
COPY --from=rust /usr/local/rustup /usr/local/rustup
COPY --from=rust /usr/local/cargo /usr/local/cargo
# a C linker for cargo (the slim image has none)
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY native ./native
COPY pt_collector ./pt_collector
# The same commands run outside Docker in tests/test_deploy.py (no Docker engine there): the wheel must hold
# the compiled engine, and ptc must name it with no toolchain on the PATH.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir "$(echo /wheels/pt_collector-*.whl)${EXTRAS:+[${EXTRAS}]}" \
 && env PATH=/usr/local/bin:/usr/bin:/bin /opt/venv/bin/ptc --version > ptc-version \
 && grep "native engine" ptc-version

# ---- runtime: the venv on the same slim Python (no toolchain: the engine is in the wheel), a non-root user,
# only CAP_NET_RAW ----
FROM ${PYTHON_IMAGE}
ARG USER_ID=10001
LABEL org.opencontainers.image.title="ptc" \
      org.opencontainers.image.description="ptc collect: SRv6 Path Tracing probes from an interface into Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
# COPY does not carry file capabilities (the security.capability xattr), so they are set
# here: cap_net_raw+ep on the interpreter the ptc script runs (the venv's python is a
# symlink to the base image's; setcap needs the real file). setcap -v checks it took.
# libcap2-bin is only needed for that and goes again in the same layer.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && interpreter="$(readlink -f "$(sed -n '1s/^#!//p' /opt/venv/bin/ptc)")" \
 && setcap cap_net_raw+ep "${interpreter}" \
 && setcap -v cap_net_raw+ep "${interpreter}" \
 && apt-get purge -y --auto-remove libcap2-bin \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid "${USER_ID}" ptc \
 && useradd --system --uid "${USER_ID}" --gid ptc --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin ptc
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PTC_TOPIC=pt-probes \
    PTC_WORKERS=1 \
    PTC_STATS_INTERVAL=30
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER ${USER_ID}:${USER_ID}
# SIGTERM (docker stop) flushes every batch to Kafka and exits 0: give it time (--stop-timeout).
STOPSIGNAL SIGTERM
ENTRYPOINT ["ptc", "collect"]
