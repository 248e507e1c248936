#!/bin/sh
# Create .env from .env.example, filling every empty secret with a fresh random value.
# Usage (from the repository root): sh docker/make-env.sh   (refuses to overwrite .env)
set -eu
cd "$(dirname "$0")/.."
if [ -e .env ]; then
    echo ".env exists: not overwriting it" >&2
    exit 1
fi
random_hex() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
# A Fernet key: 32 random bytes, url-safe base64.
fernet_key() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '\n'; }
umask 077
while IFS= read -r line; do
    case "$line" in
        AIRFLOW_FERNET_KEY=) echo "AIRFLOW_FERNET_KEY=$(fernet_key)" ;;
        SFOX_API_TOKEN=) echo "$line" ;;  # empty: the sandbox token is used
        AIRFLOW_ADMIN_PASSWORD= | *_PASSWORD= | *_SECRET= | *_SECRET_KEY= | *_TOKEN=)
            echo "${line}$(random_hex)" ;;
        *) echo "$line" ;;
    esac
done < .env.example > .env
echo "wrote .env (admin password: grep AIRFLOW_ADMIN_PASSWORD .env)"
