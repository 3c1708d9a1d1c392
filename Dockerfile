# syntax=docker/dockerfile:1
# Multi-stage build: compile with the full Rust toolchain, ship only the binary on a slim base.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The query macros check against the committed .sqlx/ metadata: no database needed to build.
ENV SQLX_OFFLINE=true
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo .cargo
COPY .sqlx .sqlx
COPY migrations migrations
COPY assets assets
COPY src src
COPY tests tests
RUN cargo build --release --locked --bin prospect-api \
    && strip target/release/prospect-api

FROM debian:bookworm-slim
# TLS to PostgreSQL uses rustls with bundled roots: no OpenSSL or CA package needed.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin prospect
COPY --from=build /src/target/release/prospect-api /usr/local/bin/prospect-api
USER 10001
ENV BIND_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["prospect-api"]
CMD ["serve"]
