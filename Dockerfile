# The ingestion server for a ClickHouse server backend (docker-compose.yml).
# The embedded engine is not fetched: this image talks to ClickHouse over HTTP.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV BILTEN_SKIP_CHDB_FETCH=1
# The build adds wasm32-wasip2 and builds the built-in plugins too.
RUN rustup target add wasm32-wasip2 && cargo build --release -p bilten-analytics

FROM debian:bookworm-slim
COPY --from=build /src/target/release/bilten-analytics /usr/local/bin/bilten-analytics
# The built-in Wasm plugins; mount your own next to them and list them in
# the config's [[plugins]].
COPY --from=build /src/target/plugins/wasm32-wasip2/release/*.wasm /usr/local/lib/bilten/plugins/
ENV BILTEN_PLUGIN_HOST__DIR=/usr/local/lib/bilten/plugins
# The write-ahead log lives here (mount a volume: it is what makes a 202 durable).
RUN mkdir -p /var/lib/bilten && chown 65534 /var/lib/bilten
ENV BILTEN_DATA_DIR=/var/lib/bilten
USER 65534
EXPOSE 8080
ENTRYPOINT ["bilten-analytics"]
CMD ["serve"]
