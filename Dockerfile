# The load balancer's image: dependencies built in one stage, copied into a slim runtime.
#
#   docker build -t sanic-lb .
#   docker run --rm -p 7100:7100 -e LB_WORKERS=2 -e API_GATEWAY_URL=http://gateway:8000 sanic-lb

# ---- builder: the locked dependencies (requirements.lock), in a virtualenv -------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /build
# requirements.lock: the service's dependencies at the versions the tests passed with (the
# same pins as requirements-test.lock; `bash .ci/lock` refreshes both). Exactly those are
# installed (--no-deps), and `pip check` fails the build if the lock misses one this platform
# needs. Only the dependencies go into the venv; the service itself is copied as source below,
# so that service/settings.py finds config/defaults.toml beside it. Every dependency has a
# binary wheel for CPython 3.11 on amd64 and arm64; a platform without one would need
# `apt-get install build-essential` in this stage (never in the runtime one).
COPY requirements.lock ./
RUN pip install --no-deps -r requirements.lock \
    && pip check

# ---- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LB_HOST=0.0.0.0 \
    LB_PORT=7100 \
    LB_WORKERS=1

RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin lb

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY config/ ./config/
COPY service/ ./service/
# Compiled once here: the image is read-only to the service user, and every worker imports it.
RUN python -m compileall -q /app/service

USER lb
EXPOSE 7100

# With LB_TLS_CERT the port speaks HTTPS: the check then skips verification (its own host).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request; tls = bool(os.environ.get('LB_TLS_CERT')); ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE; urllib.request.urlopen(('https' if tls else 'http') + '://127.0.0.1:' + os.environ.get('LB_PORT', '7100') + '/lb-health', timeout=2, context=ctx if tls else None)"]

# Reads LB_HOST, LB_PORT and LB_WORKERS (and every other LB_* / *_URL setting).
CMD ["python", "-m", "service"]
