"""`doctor`: the reference's Troubleshooting section, automated.

Each check returns a Finding (findings): what was found and, when it is a problem, the fix to
try. Checks never change anything. A check that cannot run because an earlier one failed says so.

checklist picks the checks for a platform and runs them in order: the server process and its
allowed hosts (server_process), the database and the artifact store (data), Keycloak and SSO
(sso). For a platform deployed on Kubernetes (the config names a cluster, as for `apply`, or
target "kubernetes") the cluster checks (the `cluster` package: API, pods, PVCs, migration Job,
TLS certificate, the Deployment's allowed hosts) replace the checks of a local server process and
local folders; the database, bucket and Keycloak checks run as for the local platform.
"""
