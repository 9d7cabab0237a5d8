"""What a user reads: flags and findings, the report dict and its cache, HTML, version comparison."""
