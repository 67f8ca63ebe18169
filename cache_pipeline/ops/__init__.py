"""Operations: health, metrics, logs, error reporting, and the operator's resync."""
