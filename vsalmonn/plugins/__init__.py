"""The plugin API and the built-in plugins (DESIGN §7); built in a later issue."""
