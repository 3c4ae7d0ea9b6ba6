#!/usr/bin/env bash
# The demo: a real database pipeline. Starts PostgreSQL (scripts/services.sh postgres), creates
# a small shop schema, runs weir from it (initial snapshot, then streaming) into JSON-lines
# files and into a replica database, makes some changes, and shows them arriving.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}
scripts/deps.sh
scripts/services.sh postgres >/dev/null
cargo build --quiet --bin weir
WEIR="$CARGO_TARGET_DIR/debug/weir"
export PGPASSWORD=postgres
q() { psql -h 127.0.0.1 -U postgres -XtAq -v ON_ERROR_STOP=1 "$@"; }

echo "== a shop database with customers and orders"
q -d postgres -c "SELECT pg_drop_replication_slot('weir_shop') FROM pg_replication_slots WHERE slot_name = 'weir_shop'" >/dev/null
q -d postgres -c "DROP DATABASE IF EXISTS weir_demo_shop" -c "DROP DATABASE IF EXISTS weir_demo_replica" \
  -c "CREATE DATABASE weir_demo_shop" -c "CREATE DATABASE weir_demo_replica"
q -d weir_demo_shop <<'SQL'
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id bigint PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE shop.orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL,
  amount numeric(12,2) NOT NULL, status text NOT NULL, placed_at timestamptz NOT NULL DEFAULT now());
INSERT INTO shop.customers SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 1000) g;
INSERT INTO shop.orders SELECT g, 1 + g % 1000, (g % 500) + 0.99, 'placed', now() FROM generate_series(1, 20000) g;
SQL

rm -rf weir-data/shop out/shop
mkdir -p out/shop
cat > out/shop/shop.toml <<'TOML'
name = "shop"
data_dir = "../../weir-data"

[source]
type = "postgres"
url = "postgres://postgres:${PGPASSWORD}@127.0.0.1:5432/weir_demo_shop"
tables = ["shop.*"]
snapshot = "initial"

[[sinks]]
name = "files"
type = "file"
path = "files"

[[sinks]]
name = "replica"
type = "postgres"
url = "postgres://postgres:${PGPASSWORD}@127.0.0.1:5432/weir_demo_replica"
schema = "shop"
TOML
echo "== weir check out/shop/shop.toml"
"$WEIR" check out/shop/shop.toml
echo
echo "== weir run out/shop/shop.toml   (snapshot of 21,000 rows, then streaming)"
"$WEIR" run out/shop/shop.toml 2>out/shop/weir.log &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  grep -q "snapshot staged" out/shop/weir.log && break
  sleep 0.5
done
grep -q "snapshot staged" out/shop/weir.log || { tail -n 20 out/shop/weir.log; exit 1; }
echo "   snapshot staged; now changing the shop:"
q -d weir_demo_shop <<'SQL'
BEGIN;
INSERT INTO shop.customers VALUES (1001, 'Zoë 😀', 'zoe@example.com');
INSERT INTO shop.orders VALUES (20001, 1001, 123.45, 'placed', now());
COMMIT;
UPDATE shop.orders SET status = 'shipped' WHERE id = 1;
DELETE FROM shop.orders WHERE id = 2;
SQL
for _ in $(seq 60); do
  [ "$(q -d weir_demo_replica -c "SELECT count(*) FROM shop.orders WHERE id = 20001 OR (id = 1 AND status = 'shipped')")" = 2 ] && break
  sleep 0.5
done
kill -TERM $pid
wait $pid || true
trap - EXIT
echo
echo "== weir status out/shop/shop.toml"
"$WEIR" status out/shop/shop.toml
echo
echo "== what arrived in out/shop/files/"
wc -l out/shop/files/*.jsonl
echo
echo "== the last three changes of shop.orders"
tail -n 3 out/shop/files/shop.orders.jsonl
echo
echo "== the replica (database weir_demo_replica)"
q -d weir_demo_replica -c "SELECT 'customers', count(*) FROM shop.customers UNION ALL SELECT 'orders', count(*) FROM shop.orders" \
  -c "SELECT id, status, amount FROM shop.orders WHERE id IN (1, 2, 20001) ORDER BY id"
