"""Where results live: the workspace catalog (SQLite), the run store (shards), the shard writer, worker jobs."""
