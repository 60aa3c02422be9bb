# MLflow authentication helper (fish). Source it, don't run it:
#     source ~/mlflow-auth.fish
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
#   (MLFLOW_TRACKING_AUTH=keycloak) or `mlflow-stack token --shell fish | source`.

if not status stack-trace | string match -q '*from sourcing file*'
    echo "mlflow-auth.fish sets MLFLOW_TRACKING_TOKEN in the calling shell, so it must be" \
        "sourced, not run: source "(status filename) >&2
    exit 2
end

function _mlflow_auth
    for cmd in python3 curl
        if not command -q $cmd
            echo "mlflow-auth: $cmd is needed and was not found on PATH" >&2
            return 1
        end
    end
    # Only exported variables reach python3 and curl.
    set -l missing
    for var in MLFLOW_KEYCLOAK_TOKEN_URL MLFLOW_KEYCLOAK_CLIENT_ID MLFLOW_AUTH_USERNAME MLFLOW_AUTH_PASSWORD
        if not set -qx $var; or test -z "$$var"
            set -a missing $var
        end
    end
    if test (count $missing) -gt 0
        echo "mlflow-auth: not set (or not exported): $missing" >&2
        echo "mlflow-auth: hint: in code-server they come from the mlflow-client-env Secret;" \
            "elsewhere export them first (set -gx)" >&2
        return 1
    end
    set -l tls
    if set -q MLFLOW_CA_BUNDLE; and test -n "$MLFLOW_CA_BUNDLE"
        if not test -r "$MLFLOW_CA_BUNDLE"
            echo "mlflow-auth: MLFLOW_CA_BUNDLE=$MLFLOW_CA_BUNDLE is not a readable file" >&2
            return 1
        end
        set tls --cacert $MLFLOW_CA_BUNDLE
    end
    # Builds the form from the environment: no secret is in any argument.
    set -l form '@FORM_PY@'
    # Reads curl's answer (body, then the HTTP status on the last line; curl's own error text
    # instead of a body when there was no answer) and prints token, lifetime, expiry time.
    # (No backslashes or single quotes in here: fish would interpret them.)
    set -l parse '@PARSE_PY@'
    set -l response (python3 -c $form | curl --silent --show-error --stderr - \
        --proto '=https,http' --connect-timeout 10 --max-time 30 $tls \
        -H 'Accept: application/json' --write-out '\n%{http_code}' \
        --data @- -- $MLFLOW_KEYCLOAK_TOKEN_URL | string collect)
    set -l parsed (printf '%s' $response | python3 -c $parse)
    or return 1
    if test -z "$parsed[1]"
        echo "mlflow-auth: no token in the answer of Keycloak" >&2
        return 1
    end
    set -gx MLFLOW_TRACKING_TOKEN $parsed[1]
    set -l at ""
    if test -n "$parsed[3]"
        set at " (at $parsed[3])"
    end
    echo "MLflow authentication successful. Token expires in $parsed[2] seconds$at."
end

_mlflow_auth
set -l _mlflow_auth_status $status
functions -e _mlflow_auth
test $_mlflow_auth_status -eq 0
