"""Who may speak on the firehose and which notices to believe: CURVE keys, ZAP allowlists, signatures."""
