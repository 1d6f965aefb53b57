"""The icons the server and its tools show in a client (MCP ``icons``): small SVGs drawn here,
served as ``data:`` URIs (no network, nothing to host), built once at import.

Each is a 24x24 line drawing in one blue stroke (legible on light and dark themes), with no script,
no external reference and no text, so a client that is careful with SVG can show it as it is.
"""

from __future__ import annotations

import base64

from mcp_types import Icon

__all__ = ["SERVER_ICONS", "TOOL_ICONS", "icon"]

_HEAD = ('<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24" fill="none" '
         'stroke="#3b6ea8" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">')

_DRAWINGS = {
    # one input fanning out to three models: a router
    "server": '<circle cx="4" cy="12" r="2"/><path d="M6 12h4l6-6h2M10 12h8M10 12l6 6h2"/>'
              '<circle cx="20" cy="6" r="1.5"/><circle cx="20" cy="12" r="1.5"/><circle cx="20" cy="18" r="1.5"/>',
    # a speech bubble with an arrow: a prompt handed on
    "complete": '<path d="M4 5h16v10H9l-5 4z"/><path d="M9 10h6M13 8l2 2-2 2"/>',
    # a fork with a question: which way a call would go
    "route_explain": '<path d="M5 19V12l7-7 7 7v7"/><path d="M12 5v14"/><circle cx="12" cy="12" r="1"/>',
    # a bar chart: spend
    "cost_report": '<path d="M4 20h16"/><path d="M7 16v-5M12 16V7M17 16v-8"/>',
    # a gauge with its needle: a limit
    "set_budget": '<path d="M4 16a8 8 0 0 1 16 0"/><path d="M12 16l4-5"/><path d="M4 20h16"/>',
    # a window with a chart in it: the dashboard page
    "dashboard": '<rect x="3" y="4" width="18" height="16" rx="2"/><path d="M3 8h18M7 17v-3M11 17v-6M15 17v-4"/>',
    # a star: a rating
    "rate": '<path d="M12 3l2.6 5.6 6 .7-4.5 4.1 1.2 6L12 16.5 6.7 19.4l1.2-6L3.4 9.3l6-.7z"/>',
}


def icon(drawing: str) -> Icon:
    """One drawing as an SVG ``data:`` URI icon, for any size (it is a vector)."""
    svg = f"{_HEAD}{drawing}</svg>"
    src = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
    return Icon(src=src, mime_type="image/svg+xml", sizes=["any"])


SERVER_ICONS = [icon(_DRAWINGS["server"])]
TOOL_ICONS = {name: [icon(drawing)] for name, drawing in _DRAWINGS.items() if name != "server"}
"""Each tool's icons, by tool name."""
