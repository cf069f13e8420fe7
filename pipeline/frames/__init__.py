"""Frame sampling schedules and video decoding."""
