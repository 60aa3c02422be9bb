"""The Kubernetes objects, built from settings alone (pure: no cluster, no network).

`render` is the entry point (`mlflow-stack render` writes its output for GitOps); applying the
objects to a cluster is components.kubernetes, talking through mlflow_stack.kubernetes.
"""
