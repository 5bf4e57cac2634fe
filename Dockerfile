# tykpulse: one image for every role (proxy, simulate, bridge kafka, worker, schema, run).
# Configuration comes from TYKPULSE_* environment variables (see `tykpulse <command> --help`).

# Build stage: the wheel, with the native core (native/, Rust) compiled by maturin.
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup \
    PATH=/usr/local/cargo/bin:$PATH
# the Rust toolchain, taken from the official image of the version the crate is tested with
COPY --from=rust:1.95-slim-bookworm /usr/local/cargo /usr/local/cargo
COPY --from=rust:1.95-slim-bookworm /usr/local/rustup /usr/local/rustup
RUN apt-get update -q && apt-get install -y -q --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY native ./native
COPY pipelines ./pipelines
COPY sinks ./sinks
# The shipped alert rules: pipelines/alerts/shipped links here, and the build packs them.
COPY alerts ./alerts
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY --from=build /wheels /wheels
# Installed with bytecode: the image never writes any (PYTHONDONTWRITEBYTECODE), so without it every
# start of every command would compile the modules it imports again.
RUN pip install /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --create-home --home-dir /var/lib/tykpulse tykpulse
USER tykpulse
WORKDIR /var/lib/tykpulse
# 5555/5556: proxy frontend/backend (ZeroMQ); 9464: a command's /metrics, /healthz and /status
# when TYKPULSE_METRICS_PORT sets it (compose does).
EXPOSE 5555 5556 9464
ENTRYPOINT ["tykpulse"]
CMD ["--help"]
