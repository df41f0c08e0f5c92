"""The database: embedded server, engine and migrations, schema, and the named queries."""
