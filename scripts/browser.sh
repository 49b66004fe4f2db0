#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the browser tests (tests/test_team_browser.py).
#
#   scripts/browser.sh            install chromium + chromium-driver unless both are there
#   scripts/browser.sh check      exit 0 when both are installed (prints their versions), else 1
#
# Only Debian's packages: no browser download from anywhere else (Selenium Manager and
# `playwright install` are never used; the tests point at /usr/bin/chromium and
# /usr/bin/chromedriver explicitly). Needs root (or sudo) for apt-get. Idempotent.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

installed() {
  [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]
}

versions() {
  "$CHROMIUM" --version 2>/dev/null || true
  "$CHROMEDRIVER" --version 2>/dev/null || true
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "browser.sh: need root (or sudo) to run: $*" >&2
    return 1
  fi
}

case "${1:-install}" in
  check)
    if installed; then versions; exit 0; fi
    echo "chromium/chromedriver not installed (run scripts/browser.sh)" >&2
    exit 1
    ;;
  install)
    if installed; then
      echo "chromium and chromium-driver already installed" >&2
    else
      export DEBIAN_FRONTEND=noninteractive
      as_root apt-get update -qq
      as_root apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    fi
    versions
    ;;
  *)
    echo "usage: $0 [install|check]" >&2
    exit 2
    ;;
esac
