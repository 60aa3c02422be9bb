"""Server-side plugins loaded by mlflow-oidc-auth."""
