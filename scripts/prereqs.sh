# Sourced by the other scripts: installs what a fresh machine lacks to build sessiongate.
# pingora-core builds zlib-ng from source, which needs cmake.
if ! command -v cmake >/dev/null 2>&1; then
  echo "installing cmake (needed by pingora's zlib-ng build)..." >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake >/dev/null
fi
