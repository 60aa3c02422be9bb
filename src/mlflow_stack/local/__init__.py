"""The local target: the MLflow server as a managed child process on this machine, with the
schema step before it starts and the backup and restore of the platform's data."""
