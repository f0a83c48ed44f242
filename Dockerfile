# Container images of the two programs, built from the static binaries that scripts/package.sh
# leaves in dist/<target>/bin/ (no cargo runs here, so an image holds exactly the released
# binaries). docs/install.md, "Container", says how to run them.
#
#   scripts/package.sh x86_64-unknown-linux-musl                  (and/or aarch64-unknown-linux-musl)
#   docker build -t qscloud-consumer .                             the consumer (the default target)
#   docker build --target relay -t qscloud-relay .                 the relay in HTTP mode
#   docker buildx build --platform linux/amd64,linux/arm64 ...     both CPUs, after packaging both
#
# Base: distroless static (CA certificates, /etc/passwd with `nonroot`, time zones; no shell, no
# libc), run as nonroot (65532). Needs BuildKit (the default builder since Docker 23), which
# sets TARGETARCH and creates WORKDIR for the USER.

ARG TARGETARCH

FROM scratch AS dist-amd64
COPY dist/x86_64-unknown-linux-musl/bin/ /bin/

FROM scratch AS dist-arm64
COPY dist/aarch64-unknown-linux-musl/bin/ /bin/

FROM dist-${TARGETARCH} AS dist

# The relay, HTTP mode: every setting from the environment (docs/relay.md); listens on 8080 on
# every interface of the container, for the reverse proxy in front of it.
FROM gcr.io/distroless/static-debian12:nonroot AS relay
COPY --from=dist /bin/relay-fn /usr/local/bin/relay-fn
USER 65532:65532
ENV LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/relay-fn"]

# The consumer: Butler's file and the extension file mounted (read-only) in /etc/qscloud-consumer,
# secrets in the environment (QLIK_TENANT_JWT_<TENANTID>, MQTT_PASSWORD, ...), state in the
# volume /var/lib/qscloud-consumer (the extension file's stateDirectory).
FROM gcr.io/distroless/static-debian12:nonroot AS consumer
COPY --from=dist /bin/consumer /usr/local/bin/consumer
USER 65532:65532
WORKDIR /var/lib/qscloud-consumer
VOLUME /var/lib/qscloud-consumer
ENV CONSUMER_CONFIG=/etc/qscloud-consumer/butler.yaml \
    CONSUMER_EXTENSIONS=/etc/qscloud-consumer/consumer.yaml \
    CONSUMER_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/consumer"]
CMD ["run"]
