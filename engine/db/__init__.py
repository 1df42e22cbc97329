"""The SQL access layer: connections and the one path every query takes (`database`),
the named queries (`queries`), migrations and the dump of their result (`schema_dump`,
sql/schema.sql), the embedded cluster and the LISTEN connection.
It knows sql/ and the models; nothing above it."""
