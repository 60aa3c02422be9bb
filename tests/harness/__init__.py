"""Real services for the test suite: each starts on a free loopback port and stops by pid."""
