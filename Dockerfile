# tykpulse: one image for every role (proxy, simulate, bridge kafka, worker, schema, run).
# Configuration comes from TYKPULSE_* environment variables (see `tykpulse <command> --help`).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/tykpulse
COPY pyproject.toml README.md ./
COPY pipelines ./pipelines
COPY sinks ./sinks
# The shipped alert rules: pipelines/alerts/shipped links here, and the install packs them.
COPY alerts ./alerts
RUN pip install --no-compile . \
    && useradd --system --create-home --home-dir /var/lib/tykpulse tykpulse
USER tykpulse
WORKDIR /var/lib/tykpulse
# 5555/5556: proxy frontend/backend (ZeroMQ); 6066: the Faust worker's web endpoint.
EXPOSE 5555 5556 6066
ENTRYPOINT ["tykpulse"]
CMD ["--help"]
