"""The Kubernetes target: the platform's objects rendered from settings (see render.py)."""
