"""Seeing llmbatch run: the store's figures (`figures`), Prometheus metrics and health checks
for `llmbatch worker --metrics-port` (`metrics`, `health`, `server`), and the read-only web
dashboard (`dashboard`). Every view here reads the store; none writes to it."""
