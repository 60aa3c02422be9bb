"""Talking to a cluster: the client and its errors, waits for Jobs and rollouts, the values
read back from live Secrets, and the field diff of live objects against dry runs.

What is sent is built by mlflow_stack.manifests; components.kubernetes applies it.
"""
