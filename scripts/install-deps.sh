#!/usr/bin/env bash
# Installs what chorus needs to build and test on Debian 12 (idempotent; run as root or with sudo).
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config
  libvulkan-dev libvulkan-volk-dev glslang-tools spirv-tools
  mesa-vulkan-drivers vulkan-validationlayers vulkan-tools
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libedit-dev tmux   # chat: JSON, line editing; the chat test drives a real terminal
  stress-ng                             # the CPU hog of the test stage that proves no test is timing-sensitive
  python3 python3-pip ca-certificates
  libcpp-httplib-dev curl python3-venv nodejs  # serve: HTTP; its tests: curl, a venv for the openai client and Selenium, Node for the chat page's script
  chromium chromium-driver   # serve: the chat page test drives a real headless browser
  clang libclang-rt-14-dev   # libFuzzer and its sanitizer runtimes (scripts/fuzz.sh)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "chorus: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The independent NumPy reference (scripts/numpy_reference.py), which test_families runs: the
# `gguf` reader/dequantiser and NumPy from PyPI (pinned gguf; a Debian-managed Python refuses a
# plain pip install, hence the second form).
if ! python3 -c "import gguf, numpy" 2>/dev/null; then
  echo "chorus: installing the Python packages gguf and numpy" >&2
  python3 -m pip install --disable-pip-version-check -q "gguf==0.19.0" numpy ||
    python3 -m pip install --disable-pip-version-check -q --break-system-packages "gguf==0.19.0" numpy
fi
