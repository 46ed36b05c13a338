"""Who hears about an alarm is decided in core.routing, shared with field; re-exported for notify."""

from core.routing import TIER_ORDER, ladder_recipients, tier_recipients

__all__ = ["TIER_ORDER", "ladder_recipients", "tier_recipients"]
