#!/usr/bin/env bash
# Set up the tinyodl simulation toolchain on Debian 12 (run as root; safe to run again).
#
#   1. apt packages: the RISC-V cross compiler, picolibc, QEMU, a host C compiler for the plugin;
#   2. qemu-plugin.h of the *installed* QEMU, taken from its Debian source package (the header is
#      GPL-2.0-or-later, so it is fetched here and never kept in the repository);
#   3. the instruction-count plugin, built into ${TINYODL_HOME:-$HOME/.cache/tinyodl}/tinyodl_insn.so.
#
# Every step is skipped when its result is already present.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
home_dir="${TINYODL_HOME:-$HOME/.cache/tinyodl}"
header="$home_dir/qemu-plugin.h"
plugin_src="$here/plugin/tinyodl_insn.c"
plugin_so="$home_dir/tinyodl_insn.so"
src_entry=/etc/apt/sources.list.d/tinyodl-deb-src.sources
workdir=""
packages=(gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc gcc libc6-dev xz-utils)

say() { printf 'setup: %s\n' "$*"; }

missing_packages() {
    local pkg
    for pkg in "${packages[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            printf '%s\n' "$pkg"
        fi
    done
}

install_packages() {
    local missing
    missing="$(missing_packages)"
    if [[ -z "$missing" ]]; then
        say "apt packages already installed: ${packages[*]}"
        return
    fi
    say "installing apt packages: $(echo "$missing" | tr '\n' ' ')"
    apt-get update
    # shellcheck disable=SC2086  # one package name per word
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
}

# Writes deb-src twins of the machine's own apt entries (same URIs, suites, components, keys).
write_deb_src_entry() {
    local deb822=/etc/apt/sources.list.d/debian.sources
    local oneline=/etc/apt/sources.list
    if [[ -f "$deb822" ]]; then
        sed -e 's/^Types:.*/Types: deb-src/' "$deb822" >"$src_entry"
    elif [[ -f "$oneline" ]] && grep -q '^deb ' "$oneline"; then
        src_entry=/etc/apt/sources.list.d/tinyodl-deb-src.list
        sed -n -e 's/^deb /deb-src /p' "$oneline" >"$src_entry"
    else
        say "error: found neither $deb822 nor deb lines in $oneline to derive a deb-src entry from" >&2
        exit 1
    fi
}

remove_deb_src_entry() {
    rm -f /etc/apt/sources.list.d/tinyodl-deb-src.sources /etc/apt/sources.list.d/tinyodl-deb-src.list
}

fetch_header() {
    if [[ -s "$header" ]] && grep -q 'QEMU_PLUGIN_VERSION' "$header"; then
        say "qemu-plugin.h already present: $header"
        return
    fi
    local version tarball
    version="$(dpkg-query -W -f='${source:Version}' qemu-system-misc)"
    say "fetching qemu-plugin.h from the source package qemu=$version"
    if [[ $EUID -ne 0 ]]; then
        say "error: fetching qemu-plugin.h adds a temporary apt source: run as root" >&2
        exit 1
    fi
    workdir="$(mktemp -d)"
    trap 'remove_deb_src_entry; rm -rf "$workdir"' EXIT
    # apt downloads as the unprivileged _apt user when it can write the directory
    if id _apt >/dev/null 2>&1; then
        chown _apt "$workdir"
    fi
    write_deb_src_entry
    say "temporary deb-src entry: $src_entry"
    apt-get update
    (cd "$workdir" && apt-get source --download-only "qemu=$version")
    tarball="$(find "$workdir" -maxdepth 1 -name 'qemu_*.orig.tar.*' | head -n 1)"
    if [[ -z "$tarball" ]]; then
        say "error: apt-get source gave no orig tarball for qemu=$version" >&2
        exit 1
    fi
    say "extracting include/qemu/qemu-plugin.h from $(basename "$tarball")"
    tar -xf "$tarball" -C "$workdir" --wildcards --no-anchored 'include/qemu/qemu-plugin.h'
    mkdir -p "$home_dir"
    find "$workdir" -path '*/include/qemu/qemu-plugin.h' -exec cp {} "$header" \;
    if [[ ! -s "$header" ]]; then
        say "error: qemu-plugin.h not found in $(basename "$tarball")" >&2
        exit 1
    fi
    remove_deb_src_entry
    rm -rf "$workdir"
    trap - EXIT
    say "removed the temporary deb-src entry"
}

# The plugin is current when it was built from these exact contents (source, then header): the hash is
# stored beside it, so a fresh clone (every file time new) does not look stale and an edit is never missed.
# runtime/host.py computes the same hash (plugin_source_hash).
build_plugin() {
    local digest
    digest="$(cat "$plugin_src" "$header" | sha256sum | cut -d' ' -f1)"
    if [[ -f "$plugin_so" && -f "$plugin_so.sha256" && "$(cat "$plugin_so.sha256")" == "$digest" ]]; then
        say "plugin up to date: $plugin_so"
        return
    fi
    say "building $plugin_so"
    gcc -std=c11 -O2 -Wall -Wextra -fPIC -shared -I "$home_dir" \
        -o "$plugin_so.tmp" "$plugin_src"
    mv "$plugin_so.tmp" "$plugin_so"
    echo "$digest" > "$plugin_so.sha256"
}

if [[ $EUID -ne 0 ]] && [[ -n "$(missing_packages)" ]]; then
    say "error: missing apt packages ($(missing_packages | tr '\n' ' ')); run as root" >&2
    exit 1
fi
install_packages
fetch_header
build_plugin
say "done: plugin $plugin_so"
