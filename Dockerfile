# Gatehouse for Compose deployments (see docker-compose.yml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p gatehouse

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gatehouse /usr/local/bin/gatehouse
COPY deploy/gatehouse.toml /etc/gatehouse/gatehouse.toml
COPY deploy/compose-entrypoint.sh /usr/local/bin/compose-entrypoint.sh
COPY deploy/gatehouse-fleet.toml /etc/gatehouse/gatehouse-fleet.toml
COPY deploy/fleet-entrypoint.sh /usr/local/bin/fleet-entrypoint.sh
ENV GATEHOUSE_CONFIG=/etc/gatehouse/gatehouse.toml
EXPOSE 2222
ENTRYPOINT ["/usr/local/bin/compose-entrypoint.sh"]
