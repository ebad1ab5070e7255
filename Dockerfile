# syntax=docker/dockerfile:1
# ltxvault in a container: `docker build -t ltxvault .` then
#   docker run -d --name ltxvault -p 2200:2200 -v ltxvault:/var/lib/ltxvault ltxvault
#   docker exec ltxvault ltxvault token create --data /var/lib/ltxvault --cluster prod
#
# Docker's default seccomp profile refuses io_uring_setup, so inside a container the vault
# logs "io_uring unavailable" at start and uses its pwrite engine (the same durability,
# somewhat lower ingest throughput). To give it io_uring, run with a seccomp profile that
# allows io_uring_setup/io_uring_enter/io_uring_register.

# Build stage: the release binary. The registry and target directory are BuildKit cache
# mounts, so a rebuild after a source change recompiles only ltxvault itself.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ltxvault \
    && install -D -m 0755 -s target/release/ltxvault /out/ltxvault

# Runtime stage: the binary on a slim Debian of the same release as the build (same glibc).
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/ltxvault --shell /usr/sbin/nologin ltxvault \
    && install -d -m 0700 -o ltxvault -g ltxvault /var/lib/ltxvault
COPY --from=build /out/ltxvault /usr/local/bin/ltxvault
USER ltxvault
VOLUME /var/lib/ltxvault
EXPOSE 2200
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ltxvault"]
CMD ["serve", "--data", "/var/lib/ltxvault", "--listen", "0.0.0.0:2200"]
