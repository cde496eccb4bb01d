"""Scheduling engine: priority queue with aging, resource placement, deadlines, retries."""
