#!/bin/bash
# InfluxDB 2.x first-start initialisation for Rekindle.
#
# Mounted into /docker-entrypoint-initdb.d/ of the influxdb:2.7 image, which runs it once, right
# after the DOCKER_INFLUXDB_INIT_MODE=setup step (org, bucket, admin token from .env), with the
# influx CLI already authenticated as the admin. It
#   1. maps the bucket to the InfluxQL database/retention policy "<bucket>/autogen" (DBRP), so
#      Grafana's InfluxQL queries and 1.x-style clients find the data;
#   2. creates two least-privilege API tokens and writes them to $REKINDLE_SECRETS_DIR:
#        analysis.token  read+write on the bucket (the analysis service's --influx-token-file)
#        grafana.token   read-only on the bucket  (Grafana's datasource header)
# Re-running it is harmless: an existing mapping or token file is kept.
set -euo pipefail

secrets="${REKINDLE_SECRETS_DIR:-/run/rekindle}"
org="${DOCKER_INFLUXDB_INIT_ORG:?}"
bucket="${DOCKER_INFLUXDB_INIT_BUCKET:?}"
bucket_id="${DOCKER_INFLUXDB_INIT_BUCKET_ID:-}"
if [ -z "$bucket_id" ]; then
    bucket_id="$(influx bucket list --org "$org" --name "$bucket" --hide-headers | cut -f1)"
fi
echo "init-rekindle: bucket $bucket ($bucket_id) in org $org"

existing="$(influx v1 dbrp list --org "$org" --db "$bucket" --hide-headers)"
if [ -n "$existing" ]; then
    echo "init-rekindle: DBRP mapping for database $bucket exists"
else
    influx v1 dbrp create --org "$org" --bucket-id "$bucket_id" \
        --db "$bucket" --rp autogen --default
    echo "init-rekindle: mapped InfluxQL database $bucket (rp autogen) to bucket $bucket"
fi

token_from_json() {
    # The token is the only "token" key in `influx auth create --json` output.
    sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' | head -n 1
}

make_token() {
    local file="$secrets/$1" description="$2"
    shift 2
    if [ -s "$file" ]; then
        echo "init-rekindle: $file exists, kept"
        return
    fi
    local token
    token="$(influx auth create --org "$org" --description "$description" "$@" --json \
        | token_from_json)"
    if [ -z "$token" ]; then
        echo "init-rekindle: could not create token '$description'" >&2
        exit 1
    fi
    umask 022
    printf '%s' "$token" > "$file.tmp"
    chmod 0644 "$file.tmp"
    mv "$file.tmp" "$file"
    echo "init-rekindle: wrote $file"
}

mkdir -p "$secrets"
make_token analysis.token "rekindle analysis (read/write $bucket)" \
    --read-bucket "$bucket_id" --write-bucket "$bucket_id"
make_token grafana.token "rekindle grafana (read $bucket)" --read-bucket "$bucket_id"
