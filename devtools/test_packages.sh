#!/bin/sh
# Debian packages some tests need: docker-compose, to validate docker-compose.yml, caddy, to
# run deploy/Caddyfile in front of the site, and chromium, the browser the browser tests
# drive (Playwright's own downloads are not used).
# Installed when missing and this runs as root with apt-get (CI); never fails the run:
# without them those tests skip and say why, except under CI=true, where they fail.
missing=""
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
command -v caddy >/dev/null 2>&1 || missing="$missing caddy"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    exit 0
fi
echo "Installing$missing for the tests ..."
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; } \
    >/dev/null 2>&1 || echo "Could not install$missing: the tests that need them will skip."
exit 0
