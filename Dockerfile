FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY ingest ingest
COPY rules rules
COPY notify notify
COPY api api
COPY simulators simulators
COPY examples examples
RUN pip install --no-cache-dir . && useradd --system --uid 10001 gridwatch
USER gridwatch
ENTRYPOINT ["gridwatch"]
CMD ["serve"]
