"""Promotion: the state machine, the seed's trigger, the poller, the webhook receiver."""
