#!/usr/bin/env bash
# Runs every Berth test. Installs what the tests need when it is missing:
#   skopeo, podman, buildah, wrk, openssl, docker-registry (CNCF distribution 2.8), docker.io (the
#   Docker engine: each test that needs one starts its own dockerd, with its own socket and
#   directories, and stops it), busybox-static (the images those tests build) and chromium with
#   chromium-driver (the web UI's tests, over WebDriver), prometheus (promtool checks the chart's
#   alerts and dashboard queries) from Debian's packages, and a Debian
#   root filesystem made with debootstrap (stand-in base images),
#   moto (S3 emulator), gcp-storage-emulator, azure-storage-blob, oras, helm-python-sdk and
#   kubernetes-validate from PyPI,
#   Azurite (Azure emulator) from npm, s3s-fs (an S3 server that checks signatures) and Garage
#   (a distributed S3 store, run as a 3-node cluster) with cargo.
# Fails loudly if an install fails; never skips a test for a missing tool.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_missing=()
command -v skopeo >/dev/null || apt_missing+=(skopeo)
command -v docker-registry >/dev/null || apt_missing+=(docker-registry)
command -v podman >/dev/null || apt_missing+=(podman)
command -v buildah >/dev/null || apt_missing+=(buildah)
command -v openssl >/dev/null || apt_missing+=(openssl)
command -v wrk >/dev/null || apt_missing+=(wrk)
command -v dockerd >/dev/null || apt_missing+=(docker.io)
command -v busybox >/dev/null || apt_missing+=(busybox-static)
command -v debootstrap >/dev/null || apt_missing+=(debootstrap)
command -v chromium >/dev/null || apt_missing+=(chromium)
command -v chromedriver >/dev/null || apt_missing+=(chromium-driver)
command -v promtool >/dev/null || apt_missing+=(prometheus)
if ((${#apt_missing[@]})); then
  echo "test.sh: installing ${apt_missing[*]} with apt" >&2
  # Waits for another apt or dpkg to finish instead of failing on its lock.
  as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${apt_missing[@]}" >/dev/null
fi
for tool in skopeo docker-registry podman buildah dockerd busybox chromium chromedriver promtool; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is still missing after install" >&2; exit 1; }
done

# S3 and Azure emulators, and the Azure SDK the tests use to create containers.
python3 -c 'import moto.server' 2>/dev/null && command -v moto_server >/dev/null || {
  echo "test.sh: installing moto[server] with pip" >&2
  python3 -m pip install --quiet 'moto[server]'
}
command -v gcp-storage-emulator >/dev/null || {
  echo "test.sh: installing gcp-storage-emulator with pip" >&2
  python3 -m pip install --quiet gcp-storage-emulator
}
python3 -c 'import oras.client' 2>/dev/null || {
  echo "test.sh: installing oras (Python client) with pip" >&2
  python3 -m pip install --quiet oras
}
python3 -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null || {
  echo "test.sh: installing helm-python-sdk (Helm's engine) and kubernetes-validate with pip" >&2
  python3 -m pip install --quiet helm-python-sdk kubernetes-validate pyyaml
}
python3 -c 'import azure.storage.blob' 2>/dev/null || {
  echo "test.sh: installing azure-storage-blob with pip" >&2
  python3 -m pip install --quiet azure-storage-blob
}
[ -x .tools/node_modules/.bin/azurite-blob ] || {
  echo "test.sh: installing azurite with npm into .tools/" >&2
  npm install --silent --no-audit --no-fund --prefix .tools azurite >/dev/null
}
# A strict S3 server: checks SigV4 signatures, presigned URLs included (moto does not).
# 0.14.1 is the newest that builds with this machine's rustc; ~5 min on 2 cores, once.
command -v s3s-fs >/dev/null || {
  echo "test.sh: installing s3s-fs with cargo" >&2
  cargo install --quiet --locked s3s-fs@0.14.1 --features binary
}
# Garage, a real distributed S3 store (the tests run a 3-node cluster on loopback); only the
# sqlite metadata engine the tests use: ~8 min on 2 cores, once.
command -v garage >/dev/null || {
  echo "test.sh: installing garage with cargo" >&2
  cargo install --quiet --locked garage@2.5.0 --no-default-features --features bundled-libs,sqlite
}
command -v moto_server >/dev/null || { echo "test.sh: moto_server is still missing after install" >&2; exit 1; }
command -v garage >/dev/null || { echo "test.sh: garage is still missing after install" >&2; exit 1; }
command -v s3s-fs >/dev/null || { echo "test.sh: s3s-fs is still missing after install" >&2; exit 1; }
command -v gcp-storage-emulator >/dev/null || { echo "test.sh: gcp-storage-emulator is still missing after install" >&2; exit 1; }
[ -x .tools/node_modules/.bin/azurite-blob ] || { echo "test.sh: azurite is still missing after install" >&2; exit 1; }

# A Debian root filesystem with gcc (about 40 s, once): the tests import it as local stand-ins for
# the Dockerfile's public base images, which cannot be pulled here, and build Berth's image.
[ -f .tools/standin-rootfs.tar ] || {
  echo "test.sh: making a Debian root filesystem with debootstrap into .tools/" >&2
  rm -rf .tools/standin-rootfs
  as_root debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates \
    bookworm .tools/standin-rootfs http://deb.debian.org/debian >/dev/null
  as_root tar -C .tools/standin-rootfs -cf .tools/standin-rootfs.tar.part .
  mv .tools/standin-rootfs.tar.part .tools/standin-rootfs.tar
  as_root rm -rf .tools/standin-rootfs
}

# Formatting, the fuzz crate (outside the workspace) included.
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

# Build the binary once; the end-to-end tests start it as a real process.
cargo build --quiet -p registry-server --bin berth
export BERTH_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/berth"

# A short fuzz run of every parser target first (a crash fails the run).
[ "${BERTH_SKIP_FUZZ:-}" = 1 ] || ./scripts/fuzz.sh 10

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
