"""Grants as code: the config's `permissions.grants` against mlflow-oidc-auth's live grants."""
