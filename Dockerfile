# TensorFleet Storage: one service instance. Configured by environment variables (see
# README.md, "Configuration"); its DATA_DIR is the /data volume. compose.yaml runs two of
# these over PostgreSQL and SeaweedFS.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8083 \
    S3_PORT=9000 \
    DATA_DIR=/data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home tfstorage \
    && mkdir -p /data \
    && chown tfstorage:tfstorage /data
USER tfstorage
WORKDIR /data
VOLUME /data
EXPOSE 8083 9000
# No curl in the image: the standard library asks /health, which answers 503 (an error
# for urlopen) when the index or the blob store cannot serve.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8083') + '/health', timeout=4)"]
ENTRYPOINT ["tfstorage", "serve"]
