#!/usr/bin/env bash
# Installs the Debian 12 packages that building, testing and benchmarking cohort need.
# Idempotent: packages already present are skipped. Uses sudo only when not run as root.
#
#   deploy/install-deps.sh            build + test packages
#   deploy/install-deps.sh --bench    also the reference tools (scikit-learn, FAISS, scipy)
set -euo pipefail

build_packages=(
  build-essential cmake ninja-build pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libeigen3-dev libgtest-dev libgmock-dev libbenchmark-dev
  libxxhash-dev liblbfgspp-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  libopenblas-dev zlib1g-dev libssl-dev chromium
)
bench_packages=(python3 python3-numpy python3-sklearn python3-faiss python3-scipy libblis-dev)

wanted=("${build_packages[@]}")
if [[ "${1-}" == "--bench" ]]; then
  wanted+=("${bench_packages[@]}")
elif [[ $# -gt 0 ]]; then
  echo "install-deps.sh: unknown argument '$1'; expected nothing or --bench" >&2
  exit 2
fi

missing=()
for package in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps.sh: all ${#wanted[@]} packages already installed"
  exit 0
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  sudo_cmd=(sudo)
fi

echo "install-deps.sh: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps.sh: done"
