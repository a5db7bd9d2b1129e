"""Edge: the device side — sources, tracking, real-time recognition, hot reload, sync."""
