"""DuckDB views over the pipeline's Parquet files, and the `wherefrom sql` command."""
