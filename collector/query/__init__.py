"""The query API's SQL (the routes live in collector/routes/query.py): params (ranges, cursors,
pages) -> events, sessions, tree, tools."""
