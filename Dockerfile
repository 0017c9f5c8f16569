# The image compose.yaml builds: flagsync, its CLI and the example worker
# (`python -m flagsync.examples.inference`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY flagsync ./flagsync
COPY examples ./examples
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
CMD ["flagsync", "--help"]
