#!/usr/bin/env bash
# Installs the peers from Debian when they are missing: nginx + libnginx-mod-nchan, pushpin.
set -euo pipefail
need=()
[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || need+=(nginx libnginx-mod-nchan)
command -v pushpin >/dev/null || need+=(pushpin)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian may start a system nginx on port 80 after install: the benchmark never uses it, and it
# is not ours to stop; our peers run in their own prefix on their own loopback ports.
