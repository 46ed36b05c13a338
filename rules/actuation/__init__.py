"""Actuation, in one place: the commands rules decide on (close a gas valve, cut a charging port, restore power),
their lifecycle (pending → sent → confirmed by an ack or the device's next state, or failed at the deadline), the
port lockout, and the publisher that carries them to the devices in each device's dialect."""
