"""finecot trainers: CoT SFT and TAPO on the curated Parquet shards (TRL)."""
