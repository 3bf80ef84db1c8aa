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
