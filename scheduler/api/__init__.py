"""The HTTP API: Unomi's ``/cxs/tasks`` plus nodes, config, reload, health and metrics.

``create_app(ApiServices(...))`` builds the aiohttp application; see ``routes``
for the table of endpoints and roles and ``openapi.yaml`` for the document.
"""
