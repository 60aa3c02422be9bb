"""Compatibility name for ``OIDC_GROUP_DETECTION_PLUGIN=mlflow_keycloak_groups`` (the reference's).

The implementation lives in ``mlflow_stack.server.group_plugin``.
"""

from mlflow_stack.server.group_plugin import get_user_groups

__all__ = ["get_user_groups"]
