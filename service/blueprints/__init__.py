"""One blueprint per concern: proxy, health, stats, heartbeat."""
