"""`doctor` for a platform deployed on Kubernetes: what `apply` made, as the cluster sees it now.

Checks (reads only, through lightkube, with the same client and error mapping as `apply`):
- Kubernetes API: the kubeconfig works, the API server answers, the namespace exists. When it
  fails, the checks below say so instead of each failing (or timing out) again.
- pods: the Deployment's pods are running and ready; otherwise why not (CrashLoopBackOff,
  ImagePullBackOff, Pending/unschedulable, a container that cannot start, not ready).
- PVCs: the volumes the server mounts (the local RWO volume when SQLite or local artifacts use
  it, the shared models RWX volume) are Bound; a missing storage class is named.
- migration Job: the Job for this image and database exists and has not failed.
- TLS certificate: kubernetes.tls_secret exists, holds a certificate for the public host that is
  valid for more than 14 days, and the key that goes with it.
- public host allowed: the Deployment lets the public host through MLflow's host check.

One module per check (api, pods, pvcs, migration_job, tls, allowed_host), each
`(settings, kube) -> Finding`; `connection.checks()` gives them bound to one connection per
run, as `(settings) -> Finding`.
"""
