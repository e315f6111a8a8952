# Multi-stage build: compile in the Rust image, run in a slim Debian with a
# non-root user. Migrations and Swagger UI assets are embedded in the binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
# The status page is embedded with include_str!.
COPY assets ./assets
RUN cargo build --release --locked --bin analytics-api

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /app analytics
WORKDIR /app
COPY --from=build /src/target/release/analytics-api /usr/local/bin/analytics-api
COPY config ./config
USER analytics
ENV HOST=0.0.0.0 PORT=8080 LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:8080/health/live || exit 1
ENTRYPOINT ["/usr/local/bin/analytics-api"]
CMD ["serve"]
