"""The local target: the MLflow server as a managed child process on this machine."""
