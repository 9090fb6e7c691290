# Sluice in a container: the server binary and the bundled templates, run as a non-root user.
#
#   docker build -t sluice .
#   docker compose -f deploy/compose.yaml up        (public port 8080; admin on the host's loopback)
#
# The build steps are the README's own commands (tests/e2e/image.rs checks that every `cargo`
# command below appears in README.md verbatim).

# --- build: the toolchain rust-toolchain.toml pins (Rust 1.95.0) --------------------------------
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# The template components, for wasm32-wasip2 (xtask adds the target if the toolchain lacks it),
# into target/templates/*.wasm; then the server, target/release/sluice.
RUN cargo xtask templates && cargo build --release -p sluice

# --- run: the binary, the templates and the container config; nothing else ----------------------
FROM debian:bookworm-slim
# Outbound HTTPS uses rustls with built-in web PKI roots: no CA bundle, no curl, no packages.
RUN groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --home-dir /var/lib/sluice --no-create-home \
      --shell /usr/sbin/nologin sluice \
 && mkdir -p /var/lib/sluice/outbox \
 && chown -R sluice:sluice /var/lib/sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY --from=build /src/target/templates/ /usr/local/share/sluice/templates/
COPY deploy/container.toml /etc/sluice/container.toml
# The durable delivery queues ([outbox] dir in the config): keep them across restarts.
VOLUME ["/var/lib/sluice"]
USER 10001:10001
# Only the public listener. The admin listener (8081) is not exposed on purpose, so `docker run -P`
# cannot publish it; publish it on the host's loopback only (deploy/compose.yaml).
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/sluice", "healthcheck"]
# SIGTERM (docker stop) stops accepting, finishes in-flight requests and drains the outbox for
# [outbox] drain_ms; the rest stays in the volume for the next start.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve", "--config", "/etc/sluice/container.toml", "--log-format", "json"]
