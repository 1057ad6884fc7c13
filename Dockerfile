# Tessera image: one image for every process (`tessera node`, `tessera gateway`, `tessera up`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY storage ./storage
COPY gateway ./gateway
COPY nodes ./nodes
COPY ops ./ops
RUN pip install . \
    && mkdir -p /etc/tessera /var/lib/tessera \
    && rm -rf /src/build

COPY deploy/tessera.toml /etc/tessera/tessera.toml
WORKDIR /var/lib/tessera
# S3, admin, node API
EXPOSE 9000 9001 9100
ENTRYPOINT ["tessera"]
CMD ["--help"]
