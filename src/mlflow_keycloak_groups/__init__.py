"""Compatibility name for ``OIDC_GROUP_DETECTION_PLUGIN=mlflow_keycloak_groups`` (the reference's).

The implementation lives in ``mlflow_stack.plugins.keycloak_groups``.
"""

from mlflow_stack.plugins.keycloak_groups import get_user_groups

__all__ = ["get_user_groups"]
