# One image with all of Strait's binaries: strait-gateway (ingress and egress
# gateways), strait-controller, strait-sidecar (the injected strait-init and
# strait-proxy containers) and straitctl. The charts and the sidecar injector name the
# binary to run (`command:`), so there is no entrypoint. strait-echo, the demo
# backend, serves the examples (examples/canary) and the k6 scripts.
#
#   docker build -t ghcr.io/strait/strait:0.1.0 .
#
# The tag is what the charts' `image` and the injector's `--proxy-image` default to.
# Runs as uid/gid 1337, the uid the sidecar's traffic capture lets through (Istio's);
# strait-init alone runs as root with NET_ADMIN (the injector sets that), and needs
# the iptables tools, hence Debian slim rather than distroless.

FROM rust:1.95-bookworm AS build
# Pingora's build needs cmake; protobuf is compiled in Rust (protox), no protoc.
# scripts/dist.sh measures the function order under valgrind (python3 for its tools).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake valgrind python3 openssl curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/dist.sh -p strait-gateway -p strait-sidecar -p strait-controller \
 && mkdir /out \
 && cp target/dist/strait-gateway target/dist/strait-sidecar \
       target/dist/strait-controller target/dist/straitctl \
       target/dist/strait-echo /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates iptables \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1337 strait \
 && useradd --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin strait
COPY --from=build /out/ /usr/local/bin/
USER 1337:1337
CMD ["strait-gateway", "--help"]
