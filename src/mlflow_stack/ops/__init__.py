"""Day-2 operations: backup and restore, verify, doctor."""
