# Vigil's image: the three binaries (and the OTLP demo service) on Debian slim, as a
# non-root user. Build from the repository's root:
#   docker build -t vigil:dev .
# Run one binary per container: `vigil-collector|vigil-agent|vigil-anomaly --config FILE`.

# The toolchain the project is tested with (the workspace declares 1.89 as its minimum).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins --example otlp-service \
 && mkdir /out \
 && cp target/release/vigil-collector target/release/vigil-agent target/release/vigil-anomaly \
       target/release/examples/otlp-service /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/vigil-collector /var/lib/vigil-agent /var/lib/vigil-anomaly \
 && chown 65532:65532 /var/lib/vigil-collector /var/lib/vigil-agent /var/lib/vigil-anomaly
COPY --from=build /out/ /usr/local/bin/
# Non-root by default; the agent's DaemonSet / compose service runs it as root only to read
# the node's log files (see the Helm chart's README).
USER 65532:65532
EXPOSE 4317 4318 8888 8686 8889
CMD ["vigil-collector", "--config", "/etc/vigil/collector.yaml"]
