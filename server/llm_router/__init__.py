"""llm-router-mcp: an MCP server that routes LLM work to the right model within a hard budget."""

__version__ = "0.1.0"
