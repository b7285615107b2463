#!/usr/bin/env bash
# Installs the Debian packages liger builds against, when any is missing. Safe to run again.
set -euo pipefail
pkgs=(cmake ninja-build g++ pkg-config libopenblas-dev libboost-program-options-dev nlohmann-json3-dev
      libsentencepiece-dev libpcre2-dev libicu-dev libgtest-dev
      libopenmpi-dev openmpi-bin)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install_deps] installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
