"""The wire contract, pure: messages, the Edge mapping, dates, ids, and planned writes."""
