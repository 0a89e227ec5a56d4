#!/usr/bin/env bash
# Install Debian packages the tests use (chromium for the browser test, Fashion-MNIST for the VLM).
# Best effort: tests that need a missing package skip with the reason.
set -u
[ $# -gt 0 ] || exit 0
command -v apt-get >/dev/null || { echo "apt-get missing: skipping $*"; exit 0; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q "$@" >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null 2>&1; $SUDO apt-get install -y -q "$@"; }
