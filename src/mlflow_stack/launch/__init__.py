"""How the MLflow server is started, built outside it: its command line and environment (the same
for a local process and the pod) and the schema migrations that run before it. Nothing here runs
inside the server process (that is `mlflow_stack.server`)."""
