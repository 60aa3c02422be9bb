"""Client-side pieces of the platform (what runs in the user's Python process)."""
