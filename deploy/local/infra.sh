#!/bin/sh
# The local infra image's servers (deploy/local/Dockerfile.infra), on the host network, each on ports
# of its own so that they never meet the machine's own PostgreSQL (5432) and RabbitMQ (5672, 4369,
# 25672): compose.local.yaml sets the variables below. `infra.sh health <server>` is the health check.
#   rabbitmq: RABBITMQ_NODE_PORT, RABBITMQ_DIST_PORT, ERL_EPMD_PORT, RABBITMQ_NODENAME,
#             RABBITMQ_DEFAULT_USER, RABBITMQ_DEFAULT_PASS          (runs as user rabbitmq)
#   postgres: POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB   (runs as user postgres)
#   s3:       S3_PORT (and the nine ports after it: weed's master, volume, filer, admin and gRPC),
#             S3_ACCESS_KEY, S3_SECRET_KEY                             (runs as user seaweedfs)
# Data directories are the official images' (compose.yaml's volumes): /var/lib/rabbitmq,
# /var/lib/postgresql/data, /data.
set -eu

rabbitmq() {
    export HOME=/var/lib/rabbitmq RABBITMQ_MNESIA_BASE=/var/lib/rabbitmq/mnesia
    export RABBITMQ_LOG_BASE=/var/lib/rabbitmq/log RABBITMQ_CONFIG_FILE=/var/lib/rabbitmq/rabbitmq.conf
    cat > "$RABBITMQ_CONFIG_FILE" <<CONF
listeners.tcp.1 = 127.0.0.1:${RABBITMQ_NODE_PORT:?}
default_user = ${RABBITMQ_DEFAULT_USER:?}
default_pass = ${RABBITMQ_DEFAULT_PASS:?}
loopback_users = none
log.console = true
log.file = false
CONF
    exec rabbitmq-server
}

postgres_server() {
    pgdata=/var/lib/postgresql/data
    if [ ! -s "$pgdata/PG_VERSION" ]; then
        pwfile="$(mktemp)"
        printf '%s\n' "${POSTGRES_PASSWORD:?}" > "$pwfile"
        initdb -D "$pgdata" -U "${POSTGRES_USER:?}" --auth=scram-sha-256 --pwfile="$pwfile" \
            -E UTF8 --locale=C.UTF-8 >/dev/null
        rm -f "$pwfile"
        echo "CREATE DATABASE \"${POSTGRES_DB:?}\" OWNER \"$POSTGRES_USER\";" \
            | postgres --single -D "$pgdata" postgres >/dev/null
        echo "infra.sh: initialised $pgdata (database $POSTGRES_DB)"
    fi
    exec postgres -D "$pgdata" -p "${POSTGRES_PORT:?}" -c listen_addresses=127.0.0.1 -k /tmp
}

s3() {
    config="$(mktemp)"
    python3 - "$config" <<'PY'
import json, os, sys
identity = {"name": "faceproof", "credentials": [{"accessKey": os.environ["S3_ACCESS_KEY"],
            "secretKey": os.environ["S3_SECRET_KEY"]}], "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
with open(sys.argv[1], "w") as out:
    json.dump({"identities": [identity]}, out)
PY
    p="${S3_PORT:?}"
    exec weed mini -dir=/data -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$config" \
        -s3.port="$p" -s3.port.grpc=$((p + 1)) -master.port=$((p + 2)) -master.port.grpc=$((p + 3)) \
        -volume.port=$((p + 4)) -volume.port.grpc=$((p + 5)) -filer.port=$((p + 6)) \
        -filer.port.grpc=$((p + 7)) -admin.port=$((p + 8)) -admin.port.grpc=$((p + 9)) \
        -s3.port.iceberg=0 -s3.port.lance=0 -s3.autoCreateBucket=false -webdav=false -admin.ui=false \
        -master.telemetry=false
}

health() {
    case "$1" in
        # an AMQP handshake (the server's Connection.Start frame), without starting an Erlang VM
        rabbitmq) exec python3 -c "import socket, sys
with socket.create_connection(('127.0.0.1', ${RABBITMQ_NODE_PORT:?}), timeout=4) as amqp:
    amqp.sendall(b'AMQP\\x00\\x00\\x09\\x01')
    sys.exit(0 if amqp.recv(1) == b'\\x01' else 'RabbitMQ: no Connection.Start')" ;;
        postgres) exec pg_isready -q -h 127.0.0.1 -p "${POSTGRES_PORT:?}" -U "${POSTGRES_USER:?}" ;;
        s3) exec python3 -c "import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen('http://127.0.0.1:${S3_PORT:?}/', timeout=4)
except urllib.error.HTTPError:
    pass  # any HTTP answer (403 without a signature) means S3 is serving
except OSError as error:
    sys.exit(f'S3: {error}')" ;;
        *) echo "infra.sh: health of what? $1" >&2; exit 2 ;;
    esac
}

case "${1:-}" in
    rabbitmq) rabbitmq ;;
    postgres) postgres_server ;;
    s3) s3 ;;
    health) health "${2:-}" ;;
    *) echo "usage: infra.sh rabbitmq|postgres|s3|health <server>" >&2; exit 2 ;;
esac
