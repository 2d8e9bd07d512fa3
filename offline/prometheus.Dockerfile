# Prometheus for machines without a registry: prometheus and promtool as collector/build-prometheus.sh
# builds them from the Prometheus Go module (at the version compose.yaml's prom/prometheus tag names),
# laid out as the upstream image is: binaries in /bin, data in /prometheus, user nobody. The base is the
# local Debian one where upstream's is busybox; the web UI's assets are not in the Go module, so the UI
# answers with an error page while the API, the receivers and promtool work. Built by
# scripts/images-offline.sh (context: a folder holding `prometheus` and `promtool`).
ARG BASE_IMAGE=edgeharness/debian-python:bookworm
FROM ${BASE_IMAGE}
ARG PROMETHEUS_VERSION
LABEL org.opencontainers.image.title="edgeharness Prometheus (built from its Go module)" \
      org.opencontainers.image.version="${PROMETHEUS_VERSION}"
COPY prometheus promtool /bin/
# A named volume mounted at /prometheus takes this folder's owner, as with the upstream image.
RUN mkdir -p /etc/prometheus /prometheus && chown -R nobody:nogroup /etc/prometheus /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
