"""exchange_sim package."""
