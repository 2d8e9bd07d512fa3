# The per-region OpenTelemetry Collector for machines without a registry: the binary `make collector`
# builds with the OpenTelemetry Collector Builder (collector/builder-config.yaml, at the version pinned in
# collector/versions.env), laid out as the upstream otel/opentelemetry-collector-contrib image is: no
# shell, nothing but the binary and CA certificates, uid 10001. It holds only the components
# collector/otelcol.yaml uses, where upstream ships all of contrib. Built by scripts/images-offline.sh
# (context: a folder holding `otelcol`).
ARG BASE_IMAGE=edgeharness/debian-python:bookworm
FROM ${BASE_IMAGE} AS certificates

FROM scratch
ARG OTELCOL_VERSION
LABEL org.opencontainers.image.title="edgeharness OpenTelemetry Collector (OCB build)" \
      org.opencontainers.image.version="${OTELCOL_VERSION}"
COPY --from=certificates /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY otelcol /otelcol
USER 10001:10001
EXPOSE 4317 4318 8888 13133
ENTRYPOINT ["/otelcol"]
CMD ["--config=/etc/otelcol/otelcol.yaml"]
