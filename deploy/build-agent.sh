#!/bin/sh
# Builds skiff-agent with its embedded eBPF object: the Dockerfile's build stage runs exactly this, and so does CI
# (tests/tests/deploy.rs). The toolchain steps mirror `cargo xtask setup` (xtask/src/setup.rs) and are idempotent.
#
#   deploy/build-agent.sh deps     Debian build packages, nightly + rust-src, bpf-linker
#   deploy/build-agent.sh build    cargo build of skiff-agent (SKIFF_BUILD_PROFILE=release by default)
#   deploy/build-agent.sh all      both
# SKIFF_BUILD_DRY_RUN=1 prints the commands instead of running them.
set -eu

BPF_LINKER_VERSION=0.13.0
LLVM_PREFIX=/usr/lib/llvm-22
APT_BUILD_PACKAGES="llvm-22-dev libpolly-22-dev libzstd-dev"
PROFILE="${SKIFF_BUILD_PROFILE:-release}"

run() {
    echo "+ $*"
    if [ -z "${SKIFF_BUILD_DRY_RUN:-}" ]; then "$@"; fi
}

missing_packages() {
    for p in $APT_BUILD_PACKAGES; do
        dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || printf '%s ' "$p"
    done
}

# Whether a step must run: always when printing the commands, else when its check says so.
need() {
    [ -n "${SKIFF_BUILD_DRY_RUN:-}" ] || "$@"
}

no_rust_src() {
    ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'
}

no_bpf_linker() {
    ! bpf-linker --version 2>/dev/null | grep -q "^bpf-linker ${BPF_LINKER_VERSION%.*}\."
}

deps() {
    missing="$(missing_packages)"
    if need [ -n "$missing" ]; then
        run apt-get update -q
        # shellcheck disable=SC2086 # one word per package
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${missing:-$APT_BUILD_PACKAGES}
    fi
    if need no_rust_src; then
        run rustup toolchain install nightly --profile minimal --component rust-src
    fi
    if need no_bpf_linker; then
        run env LLVM_PREFIX="$LLVM_PREFIX" cargo install bpf-linker --no-default-features --features llvm-22 \
            --version "$BPF_LINKER_VERSION" --locked --force
    fi
}

build() {
    if [ "$PROFILE" = release ]; then
        run cargo build --release --locked -p agent --bin skiff-agent
    else
        run cargo build --locked -p agent --bin skiff-agent
    fi
}

case "${1:-all}" in
    deps) deps ;;
    build) build ;;
    all) deps; build ;;
    *) echo "usage: $0 [deps|build|all]" >&2; exit 2 ;;
esac
