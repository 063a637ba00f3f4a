"""Command-line tools outside every stage (msgnn-bench): no DVC stage imports them."""
