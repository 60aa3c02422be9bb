"""Configuration: one validated settings tree from YAML, the reference inventory and env secrets."""

from mlflow_stack.config.loader import LoadedConfig, load_config, parse_settings
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets

__all__ = ["LoadedConfig", "Secrets", "Settings", "load_config", "parse_settings"]
