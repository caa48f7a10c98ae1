"""The reporter's read-only web pages: server-rendered HTML with inline SVG charts."""
