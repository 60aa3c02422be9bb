"""mlflow-stack: a secure MLflow platform with Keycloak SSO, locally and on Kubernetes."""

__version__ = "0.1.0"

# The versions the platform runs and the image ships; tested together on Python 3.11.
MLFLOW_VERSION = "3.17.2"
MLFLOW_OIDC_AUTH_VERSION = "10.1.3"
