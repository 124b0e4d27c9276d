# The Sluice host and the first-party plugins in one image. The build runs the README's own
# steps (scripts/setup.sh, scripts/build-plugins.sh, cargo build), in release mode.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV SLUICE_CACHE=/cache SLUICE_PLUGIN_DIR=/out/plugins
RUN bash scripts/setup.sh \
 && bash scripts/build-plugins.sh \
 && bash -c '. scripts/env.sh && cargo build --release -p sluice && cp "$CARGO_TARGET_DIR/release/sluice" /out/sluice'

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/sluice /usr/local/bin/sluice
COPY --from=build /out/plugins /plugins
COPY pipelines /pipelines
ENV SLUICE_PLUGIN_DIR=/plugins SLUICE_ADMIN=0.0.0.0:9464 SLUICE_CACHE=/var/cache/sluice
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=3s --retries=6 CMD curl -fsS http://127.0.0.1:9464/health || exit 1
ENTRYPOINT ["sluice"]
CMD ["run", "/pipelines/streamify.yaml"]
