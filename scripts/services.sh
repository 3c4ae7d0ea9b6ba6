#!/usr/bin/env bash
# Brings up the servers weir's tests and demos use, on loopback, on a Debian machine (as
# root), and prints how to reach them:
#   PostgreSQL 15   127.0.0.1:5432  wal_level=logical, replication slots and senders
#   MariaDB 10.11   127.0.0.1:3306  ROW binlog with FULL row image and metadata, server_id 1
#   tansu           127.0.0.1:9092  Kafka-protocol broker (no transactions)
# Idempotent: installs only what is missing and restarts a server only when its settings
# are not already in effect. Arguments pick servers (`services.sh postgres`); none = all.
set -euo pipefail
WANT=" ${*:-postgres mariadb kafka} "
want() { [[ "$WANT" == *" $1 "* ]]; }

log() { echo "services: $*"; }
apt_updated=0
apt_install() {
  local need=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
  [ ${#need[@]} -eq 0 ] && return 0
  if [ $apt_updated -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}
wait_for() { # what, tries, command...
  local what=$1 tries=$2; shift 2
  for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  log "$what did not come up; see its log"; return 1
}

# ---------------------------------------------------------------- PostgreSQL
if want postgres; then
apt_install postgresql postgresql-client
PGVER=$(ls /etc/postgresql | sort -V | tail -n 1)
PGCONF=/etc/postgresql/$PGVER/main/conf.d/weir.conf
mkdir -p "$(dirname "$PGCONF")"
cat > /tmp/weir-pg.conf <<CONF
# written by weir scripts/services.sh
listen_addresses = '127.0.0.1'
wal_level = logical
max_replication_slots = 64
max_wal_senders = 64
max_connections = 200
max_slot_wal_keep_size = 4GB
CONF
cmp -s /tmp/weir-pg.conf "$PGCONF" || cp /tmp/weir-pg.conf "$PGCONF"
pg() { su postgres -c "psql -XtAq -h /var/run/postgresql -c \"$1\"" 2>/dev/null; }
if ! pg_lsclusters -h | awk -v v="$PGVER" '$1==v && $2=="main" {print $4}' | grep -q online; then
  log "starting PostgreSQL $PGVER"
  pg_ctlcluster --skip-systemctl-redirect "$PGVER" main start
fi
wait_for PostgreSQL 30 pg_isready -h 127.0.0.1 -p 5432
if [ "$(pg 'show wal_level')" != logical ] || [ "$(pg 'show max_wal_senders')" != 64 ]; then
  log "restarting PostgreSQL $PGVER to apply wal_level=logical"
  pg_ctlcluster --skip-systemctl-redirect "$PGVER" main restart
  wait_for PostgreSQL 30 pg_isready -h 127.0.0.1 -p 5432
fi
[ "$(pg 'show wal_level')" = logical ] || { log "PostgreSQL wal_level is still not logical"; exit 1; }
# A password for TCP clients whatever pg_hba says (trust or scram).
pg "ALTER USER postgres PASSWORD 'postgres'" >/dev/null || true
fi

# ---------------------------------------------------------------- MariaDB
if want mariadb; then
apt_install mariadb-server mariadb-client
apt_install sysbench
MYCONF=/etc/mysql/mariadb.conf.d/60-weir.cnf
cat > /tmp/weir-my.cnf <<CONF
# written by weir scripts/services.sh
[mariadbd]
bind-address = 127.0.0.1
server_id = 1
log_bin = mariadb-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
expire_logs_days = 3
max_connections = 300
max_allowed_packet = 256M
CONF
mkdir -p "$(dirname "$MYCONF")"
# Debian's my.cnf includes mariadb.conf.d; a trimmed one may not.
if [ -f /etc/mysql/my.cnf ] && ! grep -qE '^!includedir +/etc/mysql/mariadb.conf.d/?' /etc/mysql/my.cnf; then
  printf '\n!includedir /etc/mysql/mariadb.conf.d/\n' >> /etc/mysql/my.cnf
fi
cmp -s /tmp/weir-my.cnf "$MYCONF" || cp /tmp/weir-my.cnf "$MYCONF"
my() { mariadb -uroot -NBe "$1" 2>/dev/null; }
start_mariadb() {
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  wait_for MariaDB 60 mariadb-admin -uroot ping
}
if ! mariadb-admin -uroot ping >/dev/null 2>&1; then
  log "starting MariaDB"
  start_mariadb
fi
if [ "$(my 'select @@log_bin, @@binlog_format, @@binlog_row_metadata')" != "$(printf '1\tROW\tFULL')" ]; then
  log "restarting MariaDB to enable the ROW binlog"
  mariadb-admin -uroot shutdown
  for _ in $(seq 60); do pgrep -x mariadbd >/dev/null || break; sleep 1; done
  start_mariadb
fi
[ "$(my 'select @@binlog_format')" = ROW ] || { log "MariaDB binlog_format is still not ROW"; exit 1; }
fi

# ---------------------------------------------------------------- tansu (Kafka protocol)
if want kafka; then
TANSU_VERSION=${TANSU_VERSION:-0.6.0}
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tansu >/dev/null 2>&1; then
  log "installing the tansu broker with cargo (about 10 minutes on two cores, once per machine)"
  "$(dirname "$0")/deps.sh"
  cargo install tansu --locked --features dynostore,libsql ${TANSU_VERSION:+--version "$TANSU_VERSION"} >/tmp/weir-tansu-install.log 2>&1 ||
    { tail -n 30 /tmp/weir-tansu-install.log; log "tansu install failed"; exit 1; }
fi
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
stop_tansu() { # SIGTERM, then SIGKILL: a busy tansu 0.6 may not stop on SIGTERM
  local pattern='tansu broker --listener-url tcp://127.0.0.1:9092'
  pkill -f "$pattern" || true
  for _ in $(seq 10); do pgrep -f "$pattern" >/dev/null || break; sleep 1; done
  pkill -9 -f "$pattern" || true
  for _ in $(seq 30); do pgrep -f "$pattern" >/dev/null || port_open 9092 || break; sleep 1; done
}
apt_install sqlite3
TANSU_DB=/var/lib/weir-tansu/tansu.db
# tansu 0.6 can lose its storage task and keep the port open while failing every request
# ("UnableToSend" in its log): restart it then.
if port_open 9092 && grep -qE 'UnableToSend|SendError' /var/log/weir-tansu.log 2>/dev/null; then
  log "tansu on 127.0.0.1:9092 lost its storage; restarting it"
  stop_tansu
fi
# The broker's storage is scratch for the tests (each uses its own topics). tansu 0.6 reads
# records through an unindexed `header` table, so reads slow down as it grows: start over
# with an empty database once it is large.
header_table() { sqlite3 "$TANSU_DB" "select count(*) from sqlite_master where name = 'header'" 2>/dev/null | grep -qx 1; }
if [ -f "$TANSU_DB" ] && [ "$(stat -c %s "$TANSU_DB")" -gt $((64 * 1024 * 1024)) ]; then
  log "tansu storage over 64 MiB; starting the broker over with an empty one"
  stop_tansu
  rm -f "$TANSU_DB" "$TANSU_DB-wal" "$TANSU_DB-shm"
elif port_open 9092 && ! header_table; then
  log "tansu runs without its storage file; restarting it with an empty one"
  stop_tansu
  rm -f "$TANSU_DB" "$TANSU_DB-wal" "$TANSU_DB-shm"
fi
if ! port_open 9092; then
  log "starting tansu on 127.0.0.1:9092"
  mkdir -p /var/lib/weir-tansu
  # tansu reads the sqlite URL's path relative to its working directory.
  (cd /var/lib/weir-tansu && exec setsid tansu broker \
    --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine sqlite://tansu.db) >/var/log/weir-tansu.log 2>&1 </dev/null &
  wait_for tansu 60 port_open 9092 || { tail -n 20 /var/log/weir-tansu.log; exit 1; }
fi
# The index tansu lacks: a record's headers by (topition, offset_id).
wait_for "tansu's schema" 30 header_table || { log "tansu created no header table"; exit 1; }
sqlite3 -cmd '.timeout 30000' "$TANSU_DB" \
  'CREATE INDEX IF NOT EXISTS weir_header_record ON header (topition, offset_id)' ||
  { log "cannot index tansu's header table"; exit 1; }
fi

cat <<INFO
services: ready
  PostgreSQL ${PGVER:-15}  postgres://postgres:postgres@127.0.0.1:5432/postgres   (wal_level=logical)
  MariaDB          mysql://root@127.0.0.1:3306/                           (binlog ROW, FULL)
  Kafka (tansu)    127.0.0.1:9092                                         (log /var/log/weir-tansu.log)
INFO
