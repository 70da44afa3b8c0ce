#!/bin/sh
# Write the mosquitto password file for Rekindle's MQTT users from the environment:
#   MQTT_INGEST_PASSWORD, MQTT_ANALYSIS_PASSWORD, MQTT_MONITOR_PASSWORD
# Usage: make-passwd.sh [OUTPUT]   (default /mosquitto/auth/passwd)
# Needs mosquitto_passwd (in the eclipse-mosquitto image; Debian package "mosquitto").
# Passwords are hashed (PBKDF2-SHA512); the file is readable only by its owner.
set -eu

out="${1:-/mosquitto/auth/passwd}"
owner="${MQTT_PASSWD_OWNER:-}"
tmp="$out.tmp.$$"

umask 077
mkdir -p "$(dirname "$out")"
: > "$tmp"

add_user() {
    if [ -z "$2" ]; then
        echo "make-passwd.sh: $3 is empty: set it in .env" >&2
        rm -f "$tmp"
        exit 1
    fi
    mosquitto_passwd -b "$tmp" "$1" "$2"
}

add_user ingest "${MQTT_INGEST_PASSWORD:-}" MQTT_INGEST_PASSWORD
add_user analysis "${MQTT_ANALYSIS_PASSWORD:-}" MQTT_ANALYSIS_PASSWORD
add_user monitor "${MQTT_MONITOR_PASSWORD:-}" MQTT_MONITOR_PASSWORD

chmod 0600 "$tmp"
if [ -n "$owner" ]; then
    chown "$owner" "$tmp"
fi
mv "$tmp" "$out"
echo "make-passwd.sh: wrote $out (users: ingest, analysis, monitor)"
