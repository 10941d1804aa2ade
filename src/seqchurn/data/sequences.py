"""Per-user tensors: batch keys, vocabularies and scalers, vectorized tensorization, bucketing, collate."""

EVENT_TYPE = "event_type"  # (B, T) long, 0 = pad, 1 = out of vocabulary
NUMERIC = "numeric"  # (B, T, F) float
MASK = "mask"  # (B, T) bool, True on real events
SUMMARY = "summary"  # (B, S) float, standardized
STATIC = "static"  # (B, A) long, 0 = unknown
Y = "y"  # (B,) float, 1 = churned
TAU_BIN = "tau_bin"  # (B,) long
OBSERVED = "observed"  # (B,) bool
USER_ID = "user_id"  # list[str]
CUTOFF = "cutoff"  # (B,) long, days since 1970-01-01

PAD_ID = 0
OOV_ID = 1

NUMERIC_CHANNELS = ("log_amount", "log_quantity", "log_gap_prev_days", "log_days_before_cutoff")
DAYS_BEFORE_CUTOFF_CHANNEL = 3  # index into NUMERIC, the time-aware position of the Transformer
