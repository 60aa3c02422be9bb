"""One module per external system: PostgreSQL, the S3 bucket, Keycloak, Kubernetes."""
