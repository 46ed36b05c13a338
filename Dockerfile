# The image runs what users install: the wheel built from this checkout (tests/test_deployment.py installs the
# same wheel into a fresh virtualenv and runs every docker-compose service from it).
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps -w /dist .

FROM python:3.11-slim
WORKDIR /app
COPY --from=build /dist /dist
# fonts-wqy-microhei: PDF reports set Chinese text in it (report/render.py).
RUN apt-get update && apt-get install -y --no-install-recommends fonts-wqy-microhei && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir /dist/*.whl && rm -rf /dist && useradd --system --uid 10001 gridwatch
# The registries the sim profile and `gridwatch load` examples use.
COPY examples examples
USER gridwatch
ENTRYPOINT ["gridwatch"]
CMD ["serve"]
