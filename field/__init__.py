"""The work on foot: hazard work orders with photos and re-inspection, patrol rounds (docs/field.md)."""
