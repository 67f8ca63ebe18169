"""Redis: connections, the Lua scripts and the store that runs them, the schema marker."""
