"""HTTP routers, one per area: alarms, merchants, devices, admin."""
