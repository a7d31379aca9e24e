# syntax=docker/dockerfile:1
#
# tollgate container image.
#
#   docker build -t tollgate:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9090:9090 \
#     -v "$PWD/tollgate.toml:/etc/tollgate/tollgate.toml:ro" \
#     -e TOLLGATE_ADMIN_TOKEN=... tollgate:0.1.0
#
# The config file is not baked in: mount it at /etc/tollgate/tollgate.toml
# (deploy/kubernetes/ mounts a ConfigMap there). Inside a container both
# listeners must bind 0.0.0.0, e.g. [admin] listen = "0.0.0.0:9090".

ARG RUST_VERSION=1

# ---------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /build

# 1. Dependencies only. A stub crate with the real manifest and lock file:
#    this layer is rebuilt only when Cargo.toml or Cargo.lock change, not on
#    every source edit. (A [[bench]] or [[test]] target declared in
#    Cargo.toml with an explicit path would need its stub file here too.)
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# 2. The crate itself. COPY keeps the build context's modification times,
#    which may be older than the stub's artefacts; touching the crate roots
#    makes cargo rebuild tollgate instead of reusing the stub.
COPY src ./src
# The admin API serves openapi.yaml (embedded at build time by src/admin.rs).
COPY openapi.yaml ./
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/tollgate /out/tollgate

# ---------------------------------------------------------------------------
# Runtime stage: glibc + libgcc only, no shell, no package manager.
# The binary needs no other shared library (no OpenSSL).
# ---------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="tollgate" \
      org.opencontainers.image.description="API keys, scopes, rate limits and quotas in front of an unchanged HTTP API" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /out/tollgate /usr/local/bin/tollgate

# The admin verbs (`tollgate clients ...` via `kubectl exec`) find the admin
# listener through the same config file that `serve` reads.
ENV TOLLGATE_CONFIG=/etc/tollgate/tollgate.toml

# distroless "nonroot" (65532), numeric so that Kubernetes' runAsNonRoot can
# verify it.
USER 65532:65532

# 8080: public listener ([server] listen); 9090: admin listener ([admin] listen).
EXPOSE 8080 9090

ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve", "--config", "/etc/tollgate/tollgate.toml"]
