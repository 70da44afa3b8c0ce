#!/bin/sh
# Make the certificates of mosquitto's TLS listener (port 8883 in mosquitto.conf):
# a private certificate authority and a server certificate signed by it.
#
#   deploy/mosquitto/make-certs.sh [HOSTNAME_OR_IP ...]
#
# Writes to $MQTT_CERTS_DIR, by default deploy/mosquitto/certs (which docker-compose.yml's
# setup service reads).
# Name every host name and IP address the room laptops use to reach the stack machine: they
# go into the server certificate (as well as "mosquitto", "localhost" and 127.0.0.1), and
# clients check them. Copy OUTDIR/ca.crt (never ca.key) to each laptop and connect with
#   --mqtt 'mqtts://ingest@<stack machine>:8883?ca=/path/to/ca.crt'
# Re-running keeps an existing CA (laptops keep trusting it) and makes a new server
# certificate, e.g. after adding a host name. Needs openssl.
set -eu

here="$(cd "$(dirname "$0")" && pwd)"
out="${MQTT_CERTS_DIR:-$here/certs}"
days="${CERT_DAYS:-825}"

umask 077
mkdir -p "$out"

san="DNS:mosquitto,DNS:localhost,IP:127.0.0.1"
for host in "$@"; do
    case "$host" in
        *[!0-9.]*) case "$host" in *:*) san="$san,IP:$host" ;; *) san="$san,DNS:$host" ;; esac ;;
        *) san="$san,IP:$host" ;;
    esac
done

if [ ! -s "$out/ca.key" ] || [ ! -s "$out/ca.crt" ]; then
    openssl req -x509 -newkey rsa:3072 -sha256 -nodes -days 3650 \
        -subj "/CN=Rekindle MQTT CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
    echo "make-certs.sh: new CA $out/ca.crt (give it to the clients; keep ca.key private)"
fi

openssl req -newkey rsa:3072 -sha256 -nodes -subj "/CN=mosquitto" \
    -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=$san" > "$out/server.ext"
openssl x509 -req -sha256 -days "$days" -in "$out/server.csr" -CA "$out/ca.crt" \
    -CAkey "$out/ca.key" -CAcreateserial -extfile "$out/server.ext" -out "$out/server.crt" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext"
chmod 0644 "$out/ca.crt" "$out/server.crt"
chmod 0600 "$out/server.key"  # compose's setup service hands a copy to mosquitto's user
echo "make-certs.sh: server certificate $out/server.crt for $san"
