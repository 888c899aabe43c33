"""astrodriz-sm: HST runastrodriz as an event-sourced state machine."""

__version__ = "0.1.0"
