"""The built-in plugins (DESIGN §7): the meeting monitor and the surveillance monitor, loaded when enabled."""
