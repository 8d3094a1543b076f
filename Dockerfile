# cqrsd in a container: a build stage with Debian 12's -dev packages, and a runtime stage with
# only the shared libraries cqrsd and cqrsctl load (scripts/lint-deploy checks that list against
# the built binaries). docker-compose.yml runs it next to PostgreSQL.
#
#   docker build -t cqrsd .
#   docker run --rm -e DATABASE_URL=postgresql://... -p 127.0.0.1:4242:4242 cqrsd

FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build \
      libcaf-dev libpq-dev nlohmann-json3-dev libspdlog-dev libcli11-dev libssl-dev \
      libcpp-httplib-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY src/ src/
COPY actors/ actors/
COPY domains/ domains/
COPY apps/ apps/
COPY schema/ schema/
COPY web/ web/
COPY config/ config/
COPY docs/ docs/
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCQRS_BUILD_TESTS=OFF -DCQRS_BUILD_BENCH=OFF -DCMAKE_INSTALL_PREFIX=/usr/local \
 && cmake --build build \
 && DESTDIR=/stage cmake --install build

FROM debian:12-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libcaf-core0.17 libcaf-io0.17 libcaf-openssl0.17 libcpp-httplib0.11 libpq5 libspdlog1.10 \
      libfmt9 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin cqrsd
COPY --from=build /stage/usr/local/bin/ /usr/local/bin/
COPY --from=build /stage/usr/local/share/cqrs/ /usr/local/share/cqrs/
COPY --from=build /stage/usr/local/share/doc/cqrsd/ /usr/local/share/doc/cqrsd/
COPY config/cqrsd.conf /etc/cqrsd/cqrsd.conf
USER cqrsd:cqrsd
EXPOSE 4242
# Succeeds once the gateway answers; cqrsd listens only after applying the migrations.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["cqrsctl", "--port", "4242", "status"]
# Migrations are compiled in and applied at start. Inside a container the gateway must listen on
# all interfaces to be reachable through a published port; publish it on the host's loopback
# (or use TLS) — without TLS anyone who reaches the port can send commands.
ENTRYPOINT ["cqrsd", "--config-file=/etc/cqrsd/cqrsd.conf"]
CMD ["--server.bind=0.0.0.0"]
