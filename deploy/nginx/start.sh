#!/bin/sh
# Render nginx.conf.template for this environment and run nginx in the foreground. docker compose's
# proxy service (the official nginx image) and tests/test_front_proxy.py (Debian's nginx) both start
# nginx through this script, so the tested configuration is the one that runs. Arguments are passed
# to nginx (the tests add `-p <folder>`, which relative paths in the configuration are resolved in).
#
#   NGINX_LISTEN               what nginx listens on (default 80)
#   WEB_UPSTREAM               daphne's host:port (default web:8000)
#   ATTACHMENT_MAX_BYTES       the platform's upload limit (default 10485760), plus room for multipart
#   GATEWAY_MAX_REQUEST_BYTES  the gateway's (/v1/) body limit, as the platform's (default 20971520)
#   NGINX_CONF                 where the rendered configuration is written (default /etc/nginx/nginx.conf)
set -eu
here=$(cd "$(dirname "$0")" && pwd)

NGINX_LISTEN=${NGINX_LISTEN:-80}
WEB_UPSTREAM=${WEB_UPSTREAM:-web:8000}
ATTACHMENT_MAX_BYTES=${ATTACHMENT_MAX_BYTES:-10485760}
GATEWAY_MAX_REQUEST_BYTES=${GATEWAY_MAX_REQUEST_BYTES:-20971520}
NGINX_CONF=${NGINX_CONF:-/etc/nginx/nginx.conf}
case $ATTACHMENT_MAX_BYTES in
  '' | *[!0-9]*) echo "start.sh: ATTACHMENT_MAX_BYTES must be a number of bytes, not '$ATTACHMENT_MAX_BYTES'." >&2; exit 2 ;;
esac
# Nor 0 (or a number written with a leading 0) here: nginx reads client_max_body_size 0 as no limit.
case $GATEWAY_MAX_REQUEST_BYTES in
  '' | *[!0-9]* | 0*) echo "start.sh: GATEWAY_MAX_REQUEST_BYTES must be a positive number of bytes, not '$GATEWAY_MAX_REQUEST_BYTES'." >&2; exit 2 ;;
esac
# The multipart boundary and part headers around the file: cs_platform/upload_limit.py's
# MULTIPART_OVERHEAD_BYTES, so both refuse the same bodies.
ATTACHMENT_BODY_MAX_BYTES=$((ATTACHMENT_MAX_BYTES + 65536))
# As the platform words it ("10 MB"), for the refusal's detail.
ATTACHMENT_LIMIT_MB=$(awk "BEGIN { printf \"%g\", $ATTACHMENT_MAX_BYTES / 1048576 }")
export NGINX_LISTEN WEB_UPSTREAM ATTACHMENT_BODY_MAX_BYTES ATTACHMENT_LIMIT_MB GATEWAY_MAX_REQUEST_BYTES

# Only these names are replaced: nginx's own $variables stay as they are.
envsubst '${NGINX_LISTEN} ${WEB_UPSTREAM} ${ATTACHMENT_BODY_MAX_BYTES} ${ATTACHMENT_LIMIT_MB} ${GATEWAY_MAX_REQUEST_BYTES}' \
  < "$here/nginx.conf.template" > "$NGINX_CONF"
exec nginx -e stderr -c "$NGINX_CONF" -g 'daemon off;' "$@"
