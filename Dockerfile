# Multi-stage build: a Rust toolchain image builds berth; a distroless runtime image (glibc, CA
# certificates, no shell) runs it. The two bases are build arguments so that a machine without
# access to the public images can build with local stand-ins (the tests do:
# integration/src/image.rs); the defaults are the published ones.
ARG BUILDER_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p registry-server --bin berth \
 && strip target/release/berth

FROM ${RUNTIME_IMAGE}
COPY --from=build /src/target/release/berth /usr/local/bin/berth
COPY deploy/config.yml /etc/berth/config.yml
# Root by default, as registry:2: the tutorials bind-mount a host directory that docker creates
# root-owned (`-v $(pwd)/registry-data:/var/lib/registry`). `--user 65532:65532` with a volume
# that user owns runs it unprivileged; the Helm chart does (non-root, read-only root filesystem).
EXPOSE 5000
VOLUME ["/var/lib/registry"]
ENTRYPOINT ["/usr/local/bin/berth"]
CMD ["serve", "/etc/berth/config.yml"]
