#!/usr/bin/env bash
# First run on a fresh Debian 12 machine: install, build, list the Vulkan devices, and check
# every kernel against its CPU reference on each usable device.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
./build/tools/chorus devices
./build/tools/chorus selftest
