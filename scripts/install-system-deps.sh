#!/usr/bin/env bash
# Debian packages the tests need: chromium for the end-to-end tests (Playwright drives it; no browser
# downloads), iproute2 (ip) with util-linux (unshare) to run the Milvus server in a private network, and
# postgresql, whose server the shared-catalog tests start in a temporary folder (initdb + pg_ctl).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-dejavu-core)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
chromium --version
