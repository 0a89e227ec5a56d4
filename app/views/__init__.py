"""Page sections of the dashboard, one module each; ``common`` holds the shared helpers."""
