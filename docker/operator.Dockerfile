# Operator image: the kopf operator that turns ModelFleets into RayServices (the chart's
# operator.image). No Ray or vLLM runs in it; it only renders and talks to the Kubernetes API.
#   docker build -f docker/operator.Dockerfile -t ghcr.io/slm-fleet/operator:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# uid/gid 10001: the chart's pod securityContext runs as this user (runAsNonRoot needs a numeric uid).
RUN groupadd --system --gid 10001 slmfleet \
    && useradd --system --uid 10001 --gid slmfleet --no-create-home --shell /usr/sbin/nologin slmfleet

WORKDIR /src
COPY pyproject.toml README.md ./
COPY serving ./serving
COPY operators ./operators
# A regular (not editable) install, so the sources can go; the `operator` extra brings kopf and lightkube.
RUN pip install ".[operator]" && cd / && rm -rf /src

WORKDIR /
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["kopf"]
# The chart passes its own command (with --namespace=... when it watches listed namespaces).
CMD ["run", "--standalone", "--liveness=http://0.0.0.0:8080/healthz", "-m", "operators.handlers", "--all-namespaces"]
