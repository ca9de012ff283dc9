#!/bin/sh
# Debian packages some tests need: docker-compose, to validate docker-compose.yml. Installed
# when missing and this runs as root with apt-get (CI); never fails the run: without them
# those tests skip and say why, except under CI=true, where they fail.
command -v docker-compose >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    exit 0
fi
echo "Installing docker-compose for the deployment tests ..."
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose; } \
    >/dev/null 2>&1 || echo "Could not install docker-compose: the compose file test will skip."
exit 0
