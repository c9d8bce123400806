#!/usr/bin/env bash
# Builds the .deb and the .rpm from one release build of `hostmesh`.
#
#   packaging/build.sh [--no-build] [--version VERSION] [--out DIR]
#
# --no-build   package the existing target/release/hostmesh (CI builds once, packages twice)
# --version    package version (default: the crate's); e.g. 0.1.1 to test upgrades
# --out        where the packages go (default: target/packages)
# cargo-deb and cargo-generate-rpm are installed (--locked) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
version=""
out=target/packages
while [ $# -gt 0 ]; do
    case $1 in
        --no-build) build=0 ;;
        --version) version=${2:?--version needs a value}; shift ;;
        --out) out=${2:?--out needs a directory}; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

for tool in cargo-deb:cargo-deb cargo-generate-rpm:cargo-generate-rpm; do
    if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
        echo "==> cargo install --locked ${tool#*:}"
        cargo install --locked --quiet "${tool#*:}"
    fi
done

if [ "$build" = 1 ]; then
    cargo build --release --locked -p hostmesh
fi
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target_dir/release/hostmesh
if [ ! -x "$bin" ]; then
    echo "build.sh: $bin is missing; run without --no-build" >&2
    exit 1
fi

mkdir -p "$out"
deb_args=(--no-build --locked -p hostmesh --output "$out")
rpm_args=(-p agent --output "$out")
if [ -n "$version" ]; then
    deb_args+=(--deb-version "$version-1")
    rpm_args+=(--set-metadata "version = \"$version\"")
fi
# cargo-deb strips its own copy of the binary.
cargo deb "${deb_args[@]}"
# cargo-generate-rpm packages the file as it is: give it a stripped copy in a target dir of its
# own, leaving the release build (which the end-to-end tests also run) with its symbols.
stage=$target_dir/rpm-stage
mkdir -p "$stage/release"
objcopy --strip-all "$bin" "$stage/release/hostmesh"
rpm_args+=(--target-dir "$stage")
cargo generate-rpm "${rpm_args[@]}"
ls -l "$out"
