"""Running an audit: the engine (claim, resume, shards, failure guard), the per-task passes, the Ray backend."""
