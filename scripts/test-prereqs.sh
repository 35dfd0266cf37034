#!/usr/bin/env bash
# System packages the tests need beyond Python: docker-compose (v1, validates the deployment
# file offline), chromium (the HTML report is checked in headless Chromium), redis-server
# (the CeleryExecutor's broker) and mosquitto (the plant's MQTT broker, with mosquitto_passwd).
# Installed with apt when missing and we may (root or sudo).
set -euo pipefail
missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
dpkg -s fonts-wqy-zenhei >/dev/null 2>&1 || missing+=(fonts-wqy-zenhei)  # Chinese texts in the report
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)  # the Celery broker (tests/celery)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)  # the plant's MQTT broker (tests/simulator)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo=sudo; else
  echo "missing system packages: ${missing[*]} (install them with apt)"; exit 0; fi
echo "installing system packages for the tests: ${missing[*]}"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
  { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
