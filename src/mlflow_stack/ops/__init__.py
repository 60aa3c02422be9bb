"""Day-2 operations on a platform: verify, doctor, upgrade. Builds on `local` (whose backup and
schema step `up` needs too) and `deploy`; nothing below imports it."""
