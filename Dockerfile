# nnverify: the API server (`nnverify serve`) and workers (`nnverify worker`) in one image.
#
# CPU image (default): torch comes from the CPU wheel index, which keeps the image small.
#   docker build -t nnverify .
# GPU workers: install the CUDA variant of torch instead, e.g. for CUDA 12.4
#   docker build -t nnverify-gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .
# and run the worker with a GPU (docker-compose.yml reserves one for the `worker` service):
#   docker run --gpus 1 nnverify-gpu nnverify worker --device cuda:0
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY pyproject.toml README.md* alembic.ini ./
COPY verifier ./verifier
COPY service ./service
COPY migrations ./migrations

RUN pip install --extra-index-url "${TORCH_INDEX}" . \
    && useradd --create-home --uid 1000 nnverify \
    && mkdir -p /data \
    && chown nnverify /data

USER nnverify

# Listening on all interfaces makes API keys required (create one with
# `docker compose run --rm api nnverify keys create --name NAME`).
ENV NNVERIFY_DATA_DIR=/data \
    NNVERIFY_HOST=0.0.0.0 \
    NNVERIFY_PORT=8000

EXPOSE 8000

# migrations run first (also done by `serve` itself), then the server with its local pool
CMD ["sh", "-c", "nnverify db upgrade && exec nnverify serve"]
