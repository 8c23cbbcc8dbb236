"""Reading, cleaning, indexing and splitting event logs."""
