"""The worker's side of the GitHub integration: authorisation, doctrine, write-back, commands."""
