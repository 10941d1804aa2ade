"""seqchurn: early churn warning and time to churn from raw event sequences."""

__version__ = "0.1.0"
