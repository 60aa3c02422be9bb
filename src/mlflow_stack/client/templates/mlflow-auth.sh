# shellcheck shell=bash
# MLflow authentication helper (bash). Source it; do not run it:
#     source ~/mlflow-auth.sh
# Gets an access token from Keycloak (password grant) and exports MLFLOW_TRACKING_TOKEN.
#
# Reads the exported variables MLFLOW_KEYCLOAK_TOKEN_URL, MLFLOW_KEYCLOAK_CLIENT_ID,
# MLFLOW_AUTH_USERNAME, MLFLOW_AUTH_PASSWORD and, if set, MLFLOW_CLIENT_SECRET and
# MLFLOW_CA_BUNDLE (a CA file for a private certificate authority).
# The password and client secret reach curl on standard input (--data @-), never in a process's
# arguments where `ps` would show them; TLS certificates are always verified.

_mlflow_auth() {
    local var missing=""
    for var in MLFLOW_KEYCLOAK_TOKEN_URL MLFLOW_KEYCLOAK_CLIENT_ID MLFLOW_AUTH_USERNAME \
               MLFLOW_AUTH_PASSWORD; do
        [ -n "${!var:-}" ] || missing="$missing $var"
    done
    if [ -n "$missing" ]; then
        echo "mlflow-auth: not set:$missing (they come from the mlflow-client-env Secret)" >&2
        return 1
    fi
    local -a tls=()
    if [ -n "${MLFLOW_CA_BUNDLE:-}" ]; then
        tls=(--cacert "$MLFLOW_CA_BUNDLE")
    fi
    # The form is built from the environment by python3, so no secret is in any argument.
    local form='import os, urllib.parse as u
e = os.environ
f = {"grant_type": "password", "client_id": e["MLFLOW_KEYCLOAK_CLIENT_ID"],
     "username": e["MLFLOW_AUTH_USERNAME"], "password": e["MLFLOW_AUTH_PASSWORD"]}
if e.get("MLFLOW_CLIENT_SECRET"):
    f["client_secret"] = e["MLFLOW_CLIENT_SECRET"]
print(u.urlencode(f), end="")'
    local parse='import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    sys.exit("mlflow-auth: unexpected answer from Keycloak (not JSON)")
if "access_token" not in d:
    sys.exit("mlflow-auth: Keycloak refused: " + str(d.get("error_description") or d.get("error") or "no token"))
print(d["access_token"])
print(d.get("expires_in", "unknown"))'
    local response
    if ! response=$(python3 -c "$form" | curl --silent --show-error --proto '=https,http' \
            "${tls[@]}" -X POST -H 'Content-Type: application/x-www-form-urlencoded' \
            --data @- "$MLFLOW_KEYCLOAK_TOKEN_URL"); then
        echo "mlflow-auth: cannot reach $MLFLOW_KEYCLOAK_TOKEN_URL" >&2
        return 1
    fi
    local parsed
    parsed=$(printf '%s' "$response" | python3 -c "$parse") || return 1
    local token expires
    { read -r token; read -r expires; } <<< "$parsed"
    export MLFLOW_TRACKING_TOKEN="$token"
    echo "MLflow authentication successful. Token expires in $expires seconds."
}

_mlflow_auth
_mlflow_auth_status=$?
unset -f _mlflow_auth
# shellcheck disable=SC2317  # `return` when sourced, `exit` when run by mistake
return "$_mlflow_auth_status" 2>/dev/null || exit "$_mlflow_auth_status"
