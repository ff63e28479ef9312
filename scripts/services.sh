# Sourced by scripts/run and scripts/test: make sure the project's tools and local services are up.
# Fails loudly when something cannot be started.

set -euo pipefail
export UV_FROZEN=1

ensure_uv() {
  if ! command -v uv >/dev/null 2>&1; then
    echo "==> installing uv"
    python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
    export PATH="$HOME/.local/bin:$PATH"
  fi
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {  # host port name seconds
  for _ in $(seq 1 "$4"); do port_open "$1" "$2" && return 0; sleep 1; done
  echo "ERROR: $3 did not come up on $1:$2" >&2
  return 1
}

ensure_postgres() {
  port_open 127.0.0.1 5432 && return 0
  echo "==> starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  wait_port 127.0.0.1 5432 PostgreSQL 60
}

ensure_rabbitmq() {
  port_open 127.0.0.1 5672 && return 0
  echo "==> starting RabbitMQ"
  rabbitmq-server -detached
  wait_port 127.0.0.1 5672 RabbitMQ 120
}

ensure_chromium() {  # Debian's Chromium for the browser test (Playwright drives it; no browser download)
  [ -x /usr/bin/chromium ] && return 0
  echo "==> installing Debian's chromium"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
    || { echo "ERROR: could not install chromium (apt-get install chromium)" >&2; return 1; }
}

ensure_docker_compose() {  # `docker-compose config` validates deploy/compose statically (no engine needed)
  command -v docker-compose >/dev/null 2>&1 && return 0
  echo "==> installing Debian's docker-compose"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null \
    || { echo "ERROR: could not install docker-compose (apt-get install docker-compose)" >&2; return 1; }
}

ensure_docker() {  # Debian's docker.io and debootstrap: tests/e2e/test_compose_stack_e2e.py builds the images
  # (scripts/local-images) and runs the compose stack on a private dockerd; without them it skips, saying why
  command -v dockerd >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 && return 0
  echo "==> installing Debian's docker.io and debootstrap"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap >/dev/null \
    || echo "WARNING: could not install docker.io and debootstrap; the compose stack test will skip" >&2
}

find_shared() {  # the shared models and face data: ../shared next to the checkout, or FACEPROOF_SHARED_DIR
  local shared="${FACEPROOF_SHARED_DIR:-}" candidate
  for candidate in ../shared ../../shared /work/shared; do
    if [ -z "$shared" ] && [ -d "$candidate/models" ]; then shared="$(cd "$candidate" && pwd)"; fi
  done
  echo "$shared"
}
