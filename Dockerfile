# The ingestion server for a ClickHouse server backend (docker-compose.yml).
# The embedded engine is not fetched: this image talks to ClickHouse over HTTP.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV BILTEN_SKIP_CHDB_FETCH=1
RUN cargo build --release -p bilten-analytics

FROM debian:bookworm-slim
COPY --from=build /src/target/release/bilten-analytics /usr/local/bin/bilten-analytics
USER 65534
EXPOSE 8080
ENTRYPOINT ["bilten-analytics"]
CMD ["serve"]
