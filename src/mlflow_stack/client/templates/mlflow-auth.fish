# MLflow authentication helper (fish). Source it:
#     source ~/mlflow-auth.fish
# Gets an access token from Keycloak (password grant) and exports MLFLOW_TRACKING_TOKEN.
#
# Reads the exported variables MLFLOW_KEYCLOAK_TOKEN_URL, MLFLOW_KEYCLOAK_CLIENT_ID,
# MLFLOW_AUTH_USERNAME, MLFLOW_AUTH_PASSWORD and, if set, MLFLOW_CLIENT_SECRET and
# MLFLOW_CA_BUNDLE (a CA file for a private certificate authority).
# The password and client secret reach curl on standard input (--data @-), never in a process's
# arguments where `ps` would show them; TLS certificates are always verified.

function _mlflow_auth
    set -l missing
    for var in MLFLOW_KEYCLOAK_TOKEN_URL MLFLOW_KEYCLOAK_CLIENT_ID MLFLOW_AUTH_USERNAME MLFLOW_AUTH_PASSWORD
        if not set -q $var; or test -z "$$var"
            set -a missing $var
        end
    end
    if test (count $missing) -gt 0
        echo "mlflow-auth: not set: $missing (they come from the mlflow-client-env Secret)" >&2
        return 1
    end
    set -l tls
    if set -q MLFLOW_CA_BUNDLE; and test -n "$MLFLOW_CA_BUNDLE"
        set tls --cacert $MLFLOW_CA_BUNDLE
    end
    # The form is built from the environment by python3, so no secret is in any argument.
    set -l form 'import os, urllib.parse as u
e = os.environ
f = {"grant_type": "password", "client_id": e["MLFLOW_KEYCLOAK_CLIENT_ID"],
     "username": e["MLFLOW_AUTH_USERNAME"], "password": e["MLFLOW_AUTH_PASSWORD"]}
if e.get("MLFLOW_CLIENT_SECRET"):
    f["client_secret"] = e["MLFLOW_CLIENT_SECRET"]
print(u.urlencode(f), end="")'
    set -l parse 'import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    sys.exit("mlflow-auth: unexpected answer from Keycloak (not JSON)")
if "access_token" not in d:
    sys.exit("mlflow-auth: Keycloak refused: " + str(d.get("error_description") or d.get("error") or "no token"))
print(d["access_token"])
print(d.get("expires_in", "unknown"))'
    set -l response (python3 -c $form | curl --silent --show-error --proto '=https,http' $tls -X POST -H 'Content-Type: application/x-www-form-urlencoded' --data @- $MLFLOW_KEYCLOAK_TOKEN_URL)
    or begin
        echo "mlflow-auth: cannot reach $MLFLOW_KEYCLOAK_TOKEN_URL" >&2
        return 1
    end
    set -l parsed (printf '%s\n' $response | python3 -c $parse)
    or return 1
    set -gx MLFLOW_TRACKING_TOKEN $parsed[1]
    echo "MLflow authentication successful. Token expires in $parsed[2] seconds."
end

_mlflow_auth
set -l _mlflow_auth_status $status
functions -e _mlflow_auth
test $_mlflow_auth_status -eq 0
