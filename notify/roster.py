"""Duty rosters and daily time windows live in core.roster (field routes by them too); re-exported for notify."""

from core.roster import DailyWindow, Shift, on_duty, parse_roster

__all__ = ["DailyWindow", "Shift", "on_duty", "parse_roster"]
