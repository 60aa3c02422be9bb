# shellcheck shell=bash
# MLflow authentication helper (bash). Source it, don't run it:
#     source ~/mlflow-auth.sh
# It gets an access token from Keycloak (password grant), exports MLFLOW_TRACKING_TOKEN and
# prints when the token expires. It returns non-zero with a message on stderr if it cannot.
#
# Reads the exported variables MLFLOW_KEYCLOAK_TOKEN_URL, MLFLOW_KEYCLOAK_CLIENT_ID,
# MLFLOW_AUTH_USERNAME, MLFLOW_AUTH_PASSWORD and, if set, MLFLOW_CLIENT_SECRET and
# MLFLOW_CA_BUNDLE (the PEM file of a private certificate authority).
# - TLS certificates are always verified (MLFLOW_CA_BUNDLE adds trust, nothing turns it off).
# - The password and client secret are never in a process's arguments (`ps` shows those):
#   python3 reads them from the environment and hands the form to curl on stdin (--data @-).
# - Needs python3 and curl. For tokens that renew themselves, use the Python plugin instead
#   (MLFLOW_TRACKING_AUTH=keycloak) or `eval "$(mlflow-stack token --export)"`.

if ! (return 0 2>/dev/null); then
    echo "mlflow-auth.sh sets MLFLOW_TRACKING_TOKEN in the calling shell, so it must be" \
         "sourced, not run: source ${BASH_SOURCE[0]:-mlflow-auth.sh}" >&2
    exit 2
fi

_mlflow_auth() {
    local cmd var missing=""
    for cmd in python3 curl; do
        if ! command -v "$cmd" >/dev/null 2>&1; then
            echo "mlflow-auth: $cmd is needed and was not found on PATH" >&2
            return 1
        fi
    done
    # printenv, not ${!var}: only exported variables reach python3 and curl.
    for var in MLFLOW_KEYCLOAK_TOKEN_URL MLFLOW_KEYCLOAK_CLIENT_ID MLFLOW_AUTH_USERNAME \
               MLFLOW_AUTH_PASSWORD; do
        [ -n "$(printenv "$var")" ] || missing="$missing $var"
    done
    if [ -n "$missing" ]; then
        echo "mlflow-auth: not set (or not exported):$missing" >&2
        echo "mlflow-auth: hint: in code-server they come from the mlflow-client-env Secret;" \
             "elsewhere export them first" >&2
        return 1
    fi
    local -a tls=()
    if [ -n "${MLFLOW_CA_BUNDLE:-}" ]; then
        if [ ! -r "$MLFLOW_CA_BUNDLE" ]; then
            echo "mlflow-auth: MLFLOW_CA_BUNDLE=$MLFLOW_CA_BUNDLE is not a readable file" >&2
            return 1
        fi
        tls=(--cacert "$MLFLOW_CA_BUNDLE")
    fi
    # Builds the form from the environment: no secret is in any argument.
    local form='@FORM_PY@'
    # Reads curl's answer (body, then the HTTP status on the last line; curl's own error text
    # instead of a body when there was no answer) and prints token, lifetime, expiry time.
    local parse='@PARSE_PY@'
    local response parsed token rest expires at
    response=$(python3 -c "$form" | curl --silent --show-error --stderr - \
        --proto '=https,http' --connect-timeout 10 --max-time 30 "${tls[@]}" \
        -H 'Accept: application/json' --write-out '\n%{http_code}' \
        --data @- -- "$MLFLOW_KEYCLOAK_TOKEN_URL")
    parsed=$(printf '%s' "$response" | python3 -c "$parse") || return 1
    token=${parsed%%$'\n'*}
    rest=${parsed#*$'\n'}
    expires=${rest%%$'\n'*}
    at=${rest#*$'\n'}
    if [ -z "$token" ]; then
        echo "mlflow-auth: no token in Keycloak's answer" >&2
        return 1
    fi
    export MLFLOW_TRACKING_TOKEN="$token"
    echo "MLflow authentication successful. Token expires in $expires seconds${at:+ (at $at)}."
}

_mlflow_auth_finish() {
    local status=$1
    unset -f _mlflow_auth _mlflow_auth_finish
    return "$status"
}

_mlflow_auth
_mlflow_auth_finish $?
