"""What an operator asks (status, fields, explain, dry run): data that both doors render."""
