"""Handling untrusted text and files safely: printing escapes, credential redaction, bounded reads, atomic writes and where shipped data lives; imports nothing else of builder."""
