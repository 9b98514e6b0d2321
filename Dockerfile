# Multi-stage build: a Rust toolchain image builds berth; a distroless runtime image (glibc, CA
# certificates, no shell, non-root) runs it.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p registry-server --bin berth \
 && strip target/release/berth

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/berth /usr/local/bin/berth
COPY deploy/config.yml /etc/berth/config.yml
USER 65532:65532
EXPOSE 5000
VOLUME ["/var/lib/registry"]
ENTRYPOINT ["/usr/local/bin/berth"]
CMD ["serve", "/etc/berth/config.yml"]
