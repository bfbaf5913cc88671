"""``memstore mcp``: one user's memory as tools for MCP clients (Claude Desktop, Cursor, agents), over stdio or
streamable HTTP. See ``memstore.adapters.mcp.server`` and docs/mcp.md."""
