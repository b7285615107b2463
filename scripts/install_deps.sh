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
# SLURM and munge for the `slurm` tests (a one-node cluster on localhost, tests/slurm/cluster.sh). Optional: where they
# cannot be installed the slurm tests skip with the reason.
slurm_missing=()
for p in slurm-wlm munge; do
  dpkg -s "$p" >/dev/null 2>&1 || slurm_missing+=("$p")
done
if [ ${#slurm_missing[@]} -gt 0 ]; then
  echo "[install_deps] installing (optional, for the slurm tests): ${slurm_missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${slurm_missing[@]}" >/dev/null; } ||
    echo "[install_deps] warning: could not install ${slurm_missing[*]}; the slurm tests will skip"
fi
