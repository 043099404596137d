# syntax=docker/dockerfile:1
#
# confab's container image: a release build on Debian, run from a distroless image as a non-root
# user. Dependencies are cooked by cargo-chef in their own layer, so editing src/ rebuilds only
# confab itself. Migrations and the static pages are compiled into the binary: the image holds
# the binary and nothing else.
#
#   docker build -t confab .
#   docker run --rm -p 3000:3000 confab        # single node, SQLite under /data, dev tokens on
#
# Build arguments: RUST_VERSION (the toolchain; edition 2024 and let-chains need 1.88 or newer),
# CARGO_CHEF_VERSION.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78

# ---- chef: the toolchain and cargo-chef ---------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /build

# ---- planner: a recipe of the dependency graph (changes only when Cargo.toml/Cargo.lock do) ----
FROM chef AS planner
COPY Cargo.toml Cargo.lock build.rs ./
COPY vendor ./vendor
COPY src ./src
COPY migrations ./migrations
COPY static ./static
RUN cargo chef prepare --recipe-path recipe.json

# ---- builder: cook the dependencies (cached layer), then build confab --------------------------
FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
# cargo-chef stubs out every local crate, the patched engineioxide (vendor/, PATCHED.md) too
# (cargo-chef#64): lay out the skeleton only, put the real patched crate back, then build the
# dependencies in this cached layer.
RUN cargo chef cook --release --locked --bin confab --recipe-path recipe.json --no-build
COPY vendor ./vendor
# (What `cook` does, by hand: build everything, then forget confab's stub so the real sources
# below are compiled.)
RUN cargo build --release --locked --bin confab && cargo clean --release -p confab
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY migrations ./migrations
COPY static ./static
RUN cargo build --release --locked --bin confab \
    && strip target/release/confab \
    && mkdir -p /out/data \
    && cp target/release/confab /out/confab

# ---- runtime: distroless (glibc, CA certificates, no shell), non-root -------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="confab" \
      org.opencontainers.image.description="A realtime chat server speaking Socket.IO v4" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /out/confab /usr/local/bin/confab
# The working directory holds the default SQLite database of a single node; a cluster uses
# Postgres and writes nothing here, so the root filesystem can be read-only.
COPY --from=builder --chown=65532:65532 /out/data /data
WORKDIR /data
USER 65532:65532
# GLIBC_TUNABLES: no per-thread malloc cache, so the memory of closed sockets goes back to the OS
# after a disconnect wave (src/memory.rs, docs/footprint.md); glibc reads it only at startup.
ENV CONFAB_LISTEN=0.0.0.0:3000 \
    CONFAB_LOG_FORMAT=json \
    GLIBC_TUNABLES=glibc.malloc.tcache_count=0
EXPOSE 3000
# `confab healthcheck` asks GET /readyz on CONFAB_LISTEN (0.0.0.0 becomes 127.0.0.1) over plain TCP.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/confab", "healthcheck"]
# SIGTERM starts the drain (readiness off, sockets closed, in-flight events acked) that takes at
# most CONFAB_SHUTDOWN_TIMEOUT seconds: give `docker stop` a longer timeout than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/confab"]
