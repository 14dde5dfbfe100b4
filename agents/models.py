"""Agents' own records: canned replies and presence (the ticket itself lives in conversations)."""
