# Sourced by the install scripts: `apt_install PACKAGE...` installs Debian packages (as root, or
# through sudo) without starting their services. Packages like prometheus, redis-server and nginx
# start a service from their postinst; on a machine without an init system (a container) that step
# fails, so service starts are refused during the install (a policy-rc.d that exits 101) and nothing
# is left running: the tests start their own processes. An existing policy-rc.d is left alone.
apt_install() {
  local sudo="" policy=/usr/sbin/policy-rc.d own_policy=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ ! -e "$policy" ]; then
    own_policy=1
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
  fi
  local rc=0
  $sudo apt-get update -qq || rc=$?
  if [ "$rc" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
  fi
  if [ -n "$own_policy" ]; then
    $sudo rm -f "$policy"
  fi
  return "$rc"
}
