"""A recorded multi-agent Claude Code session and its replay (`python -m demo`)."""
